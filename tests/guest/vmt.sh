# SPDX-License-Identifier: GPL-2.0-or-later
# The vm-test guest's steps, sourced by /init. A plan (vmt.plan=step.mode,...) runs steps in
# order; each step loads hv_stub in its mode, checks the module's vectors deliver, starts
# msitrace record, raises interrupts, runs one scenario (CPU offline, function reset, pm_test,
# S3, hibernation), raises interrupts again, stops the recorder, unloads the module and saves
# /out to the output disk. The host reads the files; the console lines are for people and for
# the host's progress and wake-up logic.

STUB=/sys/kernel/debug/hv_stub
DEFAULT_MODULES=/vmt/modules.list

say() { echo "VMT $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
param() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" /proc/cmdline; }

disk_with_serial() {
	for b in /sys/block/vd*; do
		[ -e "$b/serial" ] && [ "$(cat "$b/serial")" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
	done
	return 1
}

vmt_params() {
	PLAN=$(param vmt.plan)
	MSITRACE=$(param vmt.msitrace)
	# One run per kernel lists the probes (the host says which): each listing is a whole start.
	PROBES=$(param vmt.probes)
	G5_SILENCE=$(param vmt.g5silence)
	[ -n "$G5_SILENCE" ] || G5_SILENCE=10
}

vmt_load_modules() {
	while read -r m; do
		[ -n "$m" ] || continue
		out=$(insmod "$m" 2>&1) || say "warn insmod $m: $out"
	done < "$1"
}

vmt_find_disks() {
	# virtio-blk names disks in probe order; the serials say which is which.
	for i in 1 2 3 4 5 6 7 8 9 10; do
		SWAP=$(disk_with_serial vmt-swap) && OUTDEV=$(disk_with_serial vmt-out) && break
		sleep 0.2
	done
	[ -n "$OUTDEV" ] || say "error no output disk (serial vmt-out)"
}

# A swap disk whose header says S1SUSPEND holds a hibernation image: this is the boot kernel
# of a hibernation cycle, and the image kernel takes over from here. Before any file system
# is mounted: the image kernel still has them mounted.
vmt_resume_if_image() {
	if [ -n "$SWAP" ] && [ "$(dd if="$SWAP" bs=1 skip=4086 count=9 2>/dev/null)" = S1SUSPEND ]; then
		say "resume-image dev=$(cat /sys/block/${SWAP#/dev/}/dev) uptime=$(uptime_s)"
		cat /sys/block/${SWAP#/dev/}/dev > /sys/power/resume
		say "error the hibernation image was not restored: $(dmesg | grep -iE 'PM: |hibernat|image' | tail -3 | tr '\n' ' ')"
		vmt_finish
		while true; do sleep 3600; done
	fi
}

vmt_settings() {
	echo deep > /sys/power/mem_sleep 2>/dev/null
	# The kernel's own accounting of each BPF program's run time: msitrace keeps it in its
	# trailers and vm-test prints the cost per event of each program on each kernel.
	echo 1 > /proc/sys/kernel/bpf_stats_enabled 2>/dev/null
	# pm_test holds each level for 5 s by default; nothing here needs the wait.
	echo 0 > /sys/module/suspend/parameters/pm_test_delay 2>/dev/null
	E1000E=
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x10d3 ] && E1000E=${d##*/}
	done
	say "ready uptime=$(uptime_s) e1000e=$E1000E swap=$SWAP out=$OUTDEV msitrace=${MSITRACE:-0} plan=$PLAN"
	mkdir -p /out
	echo "$E1000E" > /out/e1000e
	uname -r > /out/kernel
	cat /proc/cmdline > /out/cmdline
}

vmt_boot() {
	say "boot kernel=$(uname -r) uptime=$(uptime_s)"
	vmt_params
	vmt_load_modules $DEFAULT_MODULES
	vmt_find_disks
	vmt_resume_if_image
	vmt_settings
}

# vmt.root=systemd: the initramfs only loads what mounting the root disk (serial vmt-root, a
# Debian system made from Debian's packages) needs and resumes a hibernation image; then
# systemd runs as PID 1 and /vmt/service.sh runs the plan as a unit (vmt-service.service).
vmt_switch_to_systemd() {
	say "boot kernel=$(uname -r) uptime=$(uptime_s) root=systemd"
	vmt_params
	vmt_load_modules $DEFAULT_MODULES
	vmt_load_modules /vmt/modules-root.list
	vmt_find_disks
	vmt_resume_if_image
	ROOTDEV=$(disk_with_serial vmt-root) || { say "error no root disk (serial vmt-root)"; vmt_finish; return 1; }
	mkdir -p /newroot
	mount -t ext4 "$ROOTDEV" /newroot || { say "error cannot mount $ROOTDEV"; vmt_finish; return 1; }
	# The steps, the module and the package come with this initramfs, built for this kernel
	# and this tree; the root disk is the same for every kernel.
	rm -rf /newroot/vmt /newroot/out
	mkdir -p /newroot/vmt
	cp /vmt/vmt.sh /vmt/service.sh /vmt/hv_stub.ko /vmt/msitrace.deb /vmt/stream.bt /newroot/vmt/
	cp /vmt/vmt-service.service /newroot/etc/systemd/system/
	mkdir -p /newroot/etc/systemd/system/multi-user.target.wants
	ln -sf /etc/systemd/system/vmt-service.service /newroot/etc/systemd/system/multi-user.target.wants/
	umount /tmp 2>/dev/null
	for m in /dev /proc /sys; do
		mkdir -p /newroot$m
		mount --move $m /newroot$m
	done
	say "switch-root dev=$ROOTDEV uptime=$(cut -d' ' -f1 /newroot/proc/uptime)"
	exec switch_root /newroot /sbin/init
}

fire_all() { echo all > $STUB/fire; }

# QEMU's e1000e sends every MSI-X message twice, 128 us apart (its EITR mitigation timer cannot
# be set below that and re-sends when it expires), and the local APIC merges the second into
# the first when the CPU has not taken it yet; fires closer than that merge in the device too.
# Fires spaced well apart therefore deliver between one and two interrupts each, never zero.
fire_spaced() {
	for i in $(seq "$1"); do fire_all; sleep "$2"; done
}

# The swap disk is busy before a hibernation (mkswap, swapon, sync), so its queues' vectors
# fired before the sleep; after it the disk has work again as a disk in use has: from every
# CPU. blk-mq gives each CPU its own queue and vector, and a queue with no work stays silent,
# which G5 (handler counts) cannot tell from a dead one: with one read after the resume,
# virtio-blk's req.0 had fired before the sleep and stayed silent after, its CPU's queue unused
# (6.12, single-threaded TCG). The reads go with the fires after msitrace's first sample after
# the resume: growth before that sample is no proof of life.
read_swap_on_every_cpu() {
	[ -n "$SWAP" ] || return 0
	for c in $(seq 0 $(($(grep -c '^processor' /proc/cpuinfo) - 1))); do
		taskset -c "$c" dd if="$SWAP" of=/dev/null bs=4k count=16 iflag=direct 2> /dev/null
	done
}

fire_spaced_with_disk() {
	for i in $(seq "$1"); do fire_all; read_swap_on_every_cpu; sleep "$2"; done
}

# The module's state with each vector's /proc/interrupts total appended (online CPUs only:
# snapshots are taken with every CPU online).
snap() {
	# hv_stub's state is read on both sides of /proc/interrupts, until an interrupt landing
	# between the reads has not moved it: one counted by /proc/interrupts and not yet by the
	# handler would read as an interrupt the handler never saw.
	snap_try=0
	while :; do
		cat $STUB/state > "$1.pre"
		cat /proc/interrupts > "$1.interrupts"
		cmp -s "$1.pre" $STUB/state && break
		snap_try=$((snap_try + 1))
		[ $snap_try -lt 20 ] || break
		sleep 0.05
	done
	awk 'FNR == NR {
		if ($1 ~ /^[0-9]+:$/) {
			n = $1; sub(":", "", n); s = 0
			for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i
			p[n] = s
		}
		next
	}
	{
		line = $0
		if ($1 ~ /^vector=/) { split($2, kv, "="); line = line " proc=" ((kv[2] in p) ? p[kv[2]] : -1) }
		print line
	}' "$1.interrupts" "$1.pre" > "$1.state"
	rm -f "$1.pre"
}

# Console summary of what each vector did between two snapshots.
live() {
	awk -v step="$ID" -v phase="$1" '
	function kv(s, a,   i, f) { for (i = 1; i <= NF; i++) { split($i, f, "="); a[f[1]] = f[2] } }
	FNR == NR { if ($1 ~ /^vector=/) { delete t; kv($0, t); for (k in t) a[$1, k] = t[k] } next }
	$1 ~ /^vector=/ {
		delete b; kv($0, b)
		printf "VMT live step=%s phase=%s %s irq=%s role=%s cpu=%s fired=%d handled=%d delivered=%d table_masked=%s cache_masked=%s genirq_masked=%s unmask_skipped=%s composes=%s\n",
			step, phase, $1, b["irq"], b["role"], b["cpu"], b["fired"] - a[$1, "fired"],
			b["handled"] - a[$1, "handled"], b["proc"] - a[$1, "proc"], b["table_masked"],
			b["cache_masked"], b["genirq_masked"], b["unmask_skipped"], b["composes"]
	}' "$2.state" "$3.state"
}

# The front-end named in the plan item records the step: `record` to a file, `live` (the TUI)
# drawing on ttyS1 with a file too, or `daemon` with its flight recorder under $D/flight. Each
# says it is ready in its own way; all leave a trace the host checks alike.
rec_start() {
	REC=
	[ "$MSITRACE" = 1 ] || return 0
	# verify records around its own command (act_hibernate).
	[ "$FRONT" = verify ] && return 0
	case $FRONT in
	live)
		# A real tty for the TUI: ttyS1, 80x24 as over ssh; its bytes go to the host's tty1.log.
		# The size is set through the same open as the TUI's: a tty forgets it on last close.
		(
			stty rows 24 cols 80 2> "$D/stty.err"
			TERM=linux exec setsid msitrace live --output "$D/trace.msit" --silence "$G5_SILENCE"
		) < /dev/ttyS1 > /dev/ttyS1 2> "$D/record.err" &
		REC=$!
		ready() { [ -s "$D/trace.msit" ]; } ;;
	daemon)
		msitrace daemon --state-dir "$D/flight" --silence "$G5_SILENCE" \
			> "$D/record.out" 2> "$D/record.err" &
		REC=$!
		ready() { ls "$D"/flight/*.msit > /dev/null 2>&1; } ;;
	service)
		# The unit was started by systemctl enable --now (service.sh). It attaches the hv_*
		# hooks when pci_hyperv appears, and the stand-in is hv_stub: killed now that hv_stub
		# is in (service.sh's kill -9 check), systemd's restart starts it as it does at boot
		# with pci_hyperv already loaded.
		service_kill_restart
		REC=$(systemctl show -p MainPID --value msitrace)
		[ "$REC" != 0 ] || REC=
		ready() { systemctl is-active -q msitrace; } ;;
	*)
		msitrace record -o "$D/trace.msit" --silence "$G5_SILENCE" > "$D/record.out" 2> "$D/record.err" &
		REC=$!
		# record says "recording to FILE" on stderr once its probes are attached.
		ready() { grep -q 'recording to' "$D/record.err" 2> /dev/null; } ;;
	esac
	i=0
	while ! ready && kill -0 $REC 2>/dev/null && [ $i -lt 900 ]; do
		sleep 0.1; i=$((i + 1))
	done
	if kill -0 $REC 2>/dev/null && ready; then
		say "recording step=$ID front=$FRONT after=$((i / 10)).$((i % 10))s"
	else
		say "error step=$ID msitrace $FRONT did not start: $(tail -3 "$D/record.err" | tr '\n' ' ')"
	fi
}

rec_stop() {
	[ -n "$REC" ] || return 0
	if [ "$FRONT" = service ]; then
		service_stop
		return
	fi
	# record stops on Ctrl-C; the TUI and the service are stopped as systemd and kill do.
	case $FRONT in
	live|daemon) kill -TERM $REC 2>/dev/null ;;
	*) kill -INT $REC 2>/dev/null ;;
	esac
	i=0
	while kill -0 $REC 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	if kill -0 $REC 2>/dev/null; then
		say "error step=$ID msitrace $FRONT ignored its stop signal for 60 s; killing it"
		kill -KILL $REC
	fi
	wait $REC
	echo $? > "$D/record.rc"
	say "recorded step=$ID front=$FRONT rc=$(cat "$D/record.rc") bytes=$(cat "$D/trace.msit" "$D"/flight/*.msit 2>/dev/null | wc -c)"
}

# Each action runs the scenario and returns its status; the interesting part happens in the
# kernel while it runs.
act_hotplug() {
	echo 0 > /sys/devices/system/cpu/cpu1/online || return 1
	sleep 1
	echo 1 > /sys/devices/system/cpu/cpu1/online
}

act_reset() {
	echo 1 > /sys/bus/pci/devices/$E1000E/reset
}

pm_test_mem() {
	echo "$1" > /sys/power/pm_test || return 1
	echo mem > /sys/power/state
	rc=$?
	echo none > /sys/power/pm_test
	return $rc
}
act_pmtest_platform() { pm_test_mem platform; }
act_pmtest_core() { pm_test_mem core; }

# The masks the stub's hv_irq_mask has seen, all vectors together.
stub_masks() {
	awk '{ for (i = 1; i <= NF; i++) if (sub("^masks=", "", $i)) s += $i } END { print s + 0 }' $STUB/state
}

# The recorder is stopped, as user space is during a freeze, while each test vector is moved to
# the other CPU and fired, round after round: x86 moves an MSI vector at its next interrupt,
# masked (hv_irq_mask, the chip's mask, then the same to unmask; 6.6 and later refuse most of
# these moves, as a vector's old slot is freed a jiffy later, but each one masks), with a
# message write and the vector tracepoints when it goes through. More than the default ring
# buffer holds; then the recorder continues and the host checks that what did not fit was
# counted as lost, exactly. The burst ends on what the kernel did, not on a count of rounds:
# how many interrupts of a round arrive while its move is pending depends on the host (CI's
# 6.12 masked a sixth as often as this machine's in 7,000 rounds, and the ring did not fill).
# A mask is at least 6 records (10 to 14 measured on 6.1 and 6.12): 24,000 of them are over
# 144,000 records, against the 116,500 the ring holds.
act_burst() {
	[ -n "$REC" ] || { say "error step=$ID the burst needs msitrace recording"; return 1; }
	irqs=$(awk '$1 ~ /^vector=/ { split($2, i, "="); print i[2] }' $STUB/state)
	target=${BURST_MASKS:-24000}
	m0=$(stub_masks)
	kill -STOP $REC || return 1
	t0=$(uptime_s)
	n=0
	m=0
	t=${t0%.*}
	# Within the host's silence limit, whatever the guest's speed.
	while [ $m -lt "$target" ] && [ $((t - ${t0%.*})) -lt 90 ]; do
		cpu=$(( (n % 2) + 1 ))
		for irq in $irqs; do echo $cpu > /proc/irq/$irq/smp_affinity; done
		echo all > $STUB/fire
		n=$((n + 1))
		if [ $((n % 250)) -eq 0 ]; then
			m=$(($(stub_masks) - m0))
			t=$(uptime_s)
			t=${t%.*}
		fi
	done
	m=$(($(stub_masks) - m0))
	t=$(uptime_s)
	say "burst step=$ID rounds=$n masks=$m from=$t0 to=$t"
	echo "rounds=$n masks=$m from=$t0 to=$t" > "$D/burst.rounds"
	kill -CONT $REC
	# The delivery checks after the scenario start here (back-to-back fires merge in the
	# APIC), from a snapshot taken once nothing moves: interrupts of the burst still arrive
	# for a while (e1000e re-sends each message after 128 us, TCG delivers late while the
	# recorder drains), and one that lands between the two reads of a snapshot is counted by
	# /proc/interrupts and not yet by the handler.
	sleep 0.5
	snap "$D/sb"
	i=0
	while [ $i -lt 40 ]; do
		sleep 0.25
		snap "$D/sb.next"
		cmp -s "$D/sb.state" "$D/sb.next.state" && break
		mv "$D/sb.next.state" "$D/sb.state"
		mv "$D/sb.next.interrupts" "$D/sb.interrupts"
		i=$((i + 1))
	done
	say "burst step=$ID settled after=$i"
}

act_s3() {
	echo 0 > /sys/class/rtc/rtc0/wakealarm
	echo +2 > /sys/class/rtc/rtc0/wakealarm
	say "wake-me step=$ID"
	echo mem > /sys/power/state
	rc=$?
	say "woke step=$ID rc=$rc"
	return $rc
}

act_hibernate() {
	[ -n "$SWAP" ] || { say "error no swap disk (serial vmt-swap)"; return 1; }
	mkswap "$SWAP" > /dev/null && swapon "$SWAP" || return 1
	sync
	say "hibernating step=$ID uptime=$(uptime_s)"
	if [ "$FRONT" = service ]; then
		# As an operator does: systemctl hibernate, so that the units' sleep ordering is a real
		# system's (sleep.conf: HibernateMode=reboot). The swap to write the image to is what
		# resume= on the kernel command line names on an installed system.
		cat /sys/block/${SWAP#/dev/}/dev > /sys/power/resume
		n0=$(dmesg | grep -c 'hibernation: hibernation exit')
		systemctl hibernate > "$D/hibernate.out" 2>&1 || return 1
		# systemctl returns once the job is queued, and systemd-hibernate.service's own state is
		# gone (garbage-collected) by the time the resumed system looks: the kernel's log says
		# when the hibernation is over, and whether it wrote and restored an image.
		i=0
		while [ "$(dmesg | grep -c 'hibernation: hibernation exit')" = "$n0" ] && [ $i -lt 1200 ]; do
			sleep 0.1
			i=$((i + 1))
			[ $((i % 100)) = 0 ] && say "waiting step=$ID for the hibernation to end"
		done
		while systemctl is-active -q systemd-hibernate.service; do sleep 0.1; done
		dmesg | grep -E 'PM: ' > "$D/hibernate.dmesg"
		# pm_debug_messages (on the systemd runs' command line) has the image kernel say it.
		grep -qi 'image restored successfully' "$D/hibernate.dmesg"
		rc=$?
	elif [ "$FRONT" = verify ]; then
		# As a kernel team's test suite runs it: verify records around the whole cycle, which
		# fires the vectors before the sleep (G5 must know they were alive) and after it, and
		# checks the probes still fire; its exit code and JSON are the verdict.
		echo reboot > /sys/power/disk
		verify_around verify_cycle
		rc=$?
	else
		echo reboot > /sys/power/disk
		echo disk > /sys/power/state
		rc=$?
	fi
	say "resumed step=$ID rc=$rc uptime=$(uptime_s)"
	swapoff "$SWAP"
	return $rc
}

# The hibernation with every vector fired by a loop until the freezer stops it: interrupts keep
# coming after msitrace's last sample before the suspend, and show first in the sample after
# the resume. G5 must still name exactly the vectors the bug left dead. The loop goes on after
# the thaw until it is stopped here; the delivery checks start from the snapshot taken after.
# Recorded by verify (FRONT=verify), the cycle is verify's command, as a test suite runs it.
act_hibernate_late() {
	[ -n "$SWAP" ] || { say "error no swap disk (serial vmt-swap)"; return 1; }
	mkswap "$SWAP" > /dev/null && swapon "$SWAP" || return 1
	sync
	echo reboot > /sys/power/disk
	if [ "$FRONT" = verify ]; then
		verify_around late_verify_cycle
		rc=$?
		say "resumed step=$ID rc=$rc uptime=$(uptime_s)"
	else
		late_cycle
		rc=$?
	fi
	swapoff "$SWAP"
	return $rc
}

# `msitrace verify` with the cycle named in $1 (a function of this file) as its command; its
# exit code and JSON are the step's verdict, kept beside the trace.
verify_around() {
	msitrace verify --json -o "$D/trace.msit" --silence "$G5_SILENCE" -- \
		env E1000E="$E1000E" D="$D" ID="$ID" SWAP="$SWAP" FRONT=verify sh -c ". /vmt/vmt.sh; $1 > /dev/console 2>&1" \
		> "$D/verify.json" 2> "$D/verify.err"
	echo $? > "$D/verify.rc"
	# 0 and 1 are verdicts; anything else is verify failing to give one.
	case $(cat "$D/verify.rc") in
	0|1) echo 0 > "$D/record.rc"; return 0 ;;
	*) cp "$D/verify.rc" "$D/record.rc"; return 1 ;;
	esac
}

# From the loop's start to the snapshot after the resume.
late_cycle() {
	( while :; do echo all > $STUB/fire; sleep 0.05; done ) &
	LOOP=$!
	sleep 1.5
	# The freezer stops the loop and the recorder together. Started right after the recorder's
	# once-a-second sample, it once left a test vector with no fire after that sample (CI,
	# 6.12), and the step tested nothing. The recorder writes its file right after each sample:
	# start the hibernation 0.4 s after the file grows, half-way to the next sample.
	size=$(wc -c < "$D/trace.msit")
	i=0
	while [ $i -lt 150 ] && [ "$(wc -c < "$D/trace.msit")" = "$size" ]; do
		sleep 0.02
		i=$((i + 1))
	done
	sleep 0.4
	say "hibernating step=$ID uptime=$(uptime_s) after-flush-polls=$i"
	echo disk > /sys/power/state
	rc=$?
	kill $LOOP
	wait $LOOP 2> /dev/null
	[ "$FRONT" = verify ] || say "resumed step=$ID rc=$rc uptime=$(uptime_s)"
	sleep 0.2
	snap "$D/sb"
	return $rc
}

# verify's command for the late hibernation: fires a sample sees before the loop (G5 must know
# the vectors were alive), the cycle, then fires after the resume and the probe check, as
# verify_cycle.
late_verify_cycle() {
	fire_spaced 3 0.2
	snap "$D/s1"
	sleep 1.2
	late_cycle || return 1
	fire_spaced_with_disk 3 0.5
	probes_alive_check
}

# After a resume: make the kprobes, kretprobes and the migration window fire once more, to show
# they survived it (kretprobes have been seen to stop after a resume).
# The reset goes first: it restores the messages hv_pci_resume left, while the CPU offline
# after it has x86 rewrite the test vectors' messages without a compose (on Hyper-V the host
# would retarget instead), which a restore in the same epoch would rightly call H2.
probes_alive_check() {
	echo 1 > /sys/bus/pci/devices/$E1000E/reset
	echo 0 > /sys/devices/system/cpu/cpu1/online && sleep 0.3 && echo 1 > /sys/devices/system/cpu/cpu1/online
}

# The command `msitrace verify` runs (FRONT=verify): the hibernation with the fires that show
# which vectors live before and after it, then the post-resume probe check.
verify_cycle() {
	fire_spaced 3 0.2
	# The host judges the device after the sleep from this snapshot on (step's s1 is taken
	# before verify starts, so these fires would count as after).
	snap "$D/s1"
	sleep 1.2
	echo disk > /sys/power/state || return 1
	fire_spaced_with_disk 3 0.5
	probes_alive_check
}

# `msitrace check` once the sleep is over and the recorder has stopped: no BPF and no trace,
# only what genirq believes and what the device holds (config space, the MSI-X table through
# the BAR). After the buggy driver's sleep it must name exactly the test vectors it left masked
# in the device; after the fixed one, nothing. One reading of /proc/interrupts (--window 0): the
# step's fires are over, so the silent-vector heuristic has nothing to see. The snapshot is the
# captured real device the host's fixtures come from.
check_after() {
	[ "$MSITRACE" = 1 ] || return 0
	msitrace check --json --window 0 --save "$D/check.snapshot.json" \
		> "$D/check.json" 2> "$D/check.err"
	echo $? > "$D/check.rc"
	say "check step=$ID rc=$(cat "$D/check.rc") $(tail -1 "$D/check.err" | tr '\n' ' ')"
}

# Issue #14: a vector masked in the device while genirq has it enabled, found by `msitrace
# check` alone, with no sleep and no trace. hv_stub's stale_mask knob sets the first test
# vector's MSI-X mask bit (table and msi_desc cache) behind genirq's back; check must exit 1
# naming exactly that vector; once the knob is cleared, check must exit 0. The host judges the
# files (xtask/src/vm/checks_stale_mask.rs).
check_now() {
	msitrace check --json --window 0 > "$D/$1.json" 2> "$D/$1.err"
	echo $? > "$D/$1.rc"
	say "check step=$ID $1 rc=$(cat "$D/$1.rc") $(tail -1 "$D/$1.err" | tr '\n' ' ')"
}

step_stale_mask() {
	fire_all
	sleep 0.2
	snap "$D/s0"
	T=$(awk '$1 ~ /^vector=/ && $3 == "role=test" { split($1, i, "="); print i[2]; exit }' $STUB/state)
	echo "$T" > "$D/stale.vector"
	say "action step=$ID stale_mask=$T uptime=$(uptime_s)"
	if ! out=$( (echo "$T" > $STUB/stale_mask) 2>&1); then
		echo "stale_mask $T: $out" > "$D/error"
		return 1
	fi
	snap "$D/s1"
	[ "$MSITRACE" = 1 ] && check_now check
	if ! out=$( (echo clear > $STUB/stale_mask) 2>&1); then
		echo "stale_mask clear: $out" > "$D/error"
		return 1
	fi
	snap "$D/s2"
	[ "$MSITRACE" = 1 ] && check_now check-clear
	return 0
}

# Issue #17: msitrace's streaming path side by side with bpftrace (Debian's, on the root disk),
# in the guest where the rare hooks can be driven. Each pass runs the same burst three times,
# under `msitrace record`, under /vmt/stream.bt (the same hooks, the fields msitrace's records
# carry, one printf a hit) and under the same hooks with empty bodies, which is what any program
# there costs; the order rotates from pass to pass so that a drift of the emulated machine falls
# on each tool alike. The consumers run throughout (no SIGSTOP): what reaches user space per
# second, and what is lost, is part of the figure. Each tool's programs are timed by the kernel
# (bpf_stats): msitrace keeps its own in its trailer; bpftrace's are read with bpftool just
# before it stops, as its programs go with it. The host pairs the hooks and makes the ratios.
# Six passes, each order of the tools twice: the guest counts instructions (qemu.rs) with both
# vCPUs on one host thread, and when the vCPUs switch inside a program, a whole time slice of
# the other vCPU's work lands in its bpf_stats. The host's QEMU plugin (tests/guest-insns)
# counts each program's instructions on its own vCPU instead; $STUB/mark tells it which phase
# runs. The step is not in CI's plan; a pass takes about two minutes.
STREAM_PASSES=6
STREAM_ROUNDS=${STREAM_ROUNDS:-600}

# offsetof(struct pci_dev, dev), from the kernel's BTF: stream.bt's $1.
stream_pci_dev_off() {
	bpftool btf dump file /sys/kernel/btf/vmlinux 2> /dev/null | awk -v q="'" '
		/^\[[0-9]+\] / { if (in_dev) exit; in_dev = ($2 == "STRUCT" && $3 == q "pci_dev" q); next }
		in_dev && $1 == q "dev" q { for (i = 2; i <= NF; i++) if (sub("^bits_offset=", "", $i)) { print $i / 8; exit } }'
}

# The burst of act_burst, with every consumer live: $1 rounds, the timing into $2/burst.
stream_burst() {
	t0=$(uptime_s)
	n=0
	while [ $n -lt "$1" ]; do
		cpu=$(( (n % 2) + 1 ))
		for irq in $STREAM_IRQS; do echo $cpu > /proc/irq/$irq/smp_affinity; done
		echo all > $STUB/fire
		n=$((n + 1))
	done
	echo "rounds=$n from=$t0 to=$(uptime_s)" > "$2/burst"
}

# Context switches of process $1, all its threads: how often something woke the consumer.
ctxt_switches() {
	cat /proc/"$1"/task/*/status 2> /dev/null |
		awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}

# One tool ($1: msitrace, bpftrace or empty) through one burst, in $D/pass-$2/$1.
stream_phase() {
	P=$D/pass-$2/$1
	mkdir -p "$P"
	case $1 in
	msitrace)
		msitrace record -q -o "$P/trace.msit" > /dev/null 2> "$P/tool.err" &
		STREAM_PID=$!
		ready() { grep -q 'recording to' "$P/tool.err" 2> /dev/null; } ;;
	bpftrace|empty)
		# A perf buffer of 16 MiB a CPU, as large as msitrace's ring: with bpftrace's default
		# (64 pages) it dropped over half of a burst, and a dropped event's program stops
		# early, so it was compared on a path that delivers nothing.
		export BPFTRACE_PERF_RB_PAGES=4096
		if [ "$1" = bpftrace ]; then
			bpftrace -o "$P/out.txt" /vmt/stream.bt "$STREAM_OFF" > /dev/null 2> "$P/tool.err" &
		else
			bpftrace -o "$P/out.txt" "$D/empty.bt" > /dev/null 2> "$P/tool.err" &
		fi
		STREAM_PID=$!
		# Ready once every hook has its program: bpftrace prints nothing that says so (its
		# output to a file is block-buffered, and "Attaching" comes before the attach).
		ready() {
			[ "$(bpftool perf show 2> /dev/null | grep -c "^pid $STREAM_PID ")" -ge "$STREAM_HOOKS" ]
		} ;;
	esac
	echo "$STREAM_PID" > "$P/pid"
	t=$(uptime_s)
	i=0
	while ! ready && kill -0 $STREAM_PID 2> /dev/null && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
	if ! ready || ! kill -0 $STREAM_PID 2> /dev/null; then
		say "error step=$ID pass=$2 $1 did not start: $(tail -3 "$P/tool.err" | tr '\n' ' ')"
		kill -KILL $STREAM_PID 2> /dev/null
		wait $STREAM_PID 2> /dev/null
		return 1
	fi
	echo "from=$t ready=$(uptime_s)" > "$P/startup"
	# Where each program's code starts, for the host's per-vCPU instruction counts (the
	# plugin knows programs by address only); bpftool below says which program is which.
	grep ' bpf_prog_' /proc/kallsyms > "$P/kallsyms"
	s0=$(ctxt_switches $STREAM_PID)
	# The phase's number for the plugin: pass, then the tool (1 msitrace, 2 bpftrace, 3 empty).
	case $1 in msitrace) m=1 ;; bpftrace) m=2 ;; *) m=3 ;; esac
	echo $(($2 * 4 + m)) > $STUB/mark
	stream_burst "$STREAM_ROUNDS" "$P"
	# The consumer drains what is still in flight before its programs' counters are read.
	sleep 1
	echo 0 > $STUB/mark
	echo "switches=$(($(ctxt_switches $STREAM_PID) - s0))" >> "$P/burst"
	bpftool perf show --json > "$P/perf.json" 2> "$P/bpftool.err"
	bpftool prog show --json > "$P/progs.json" 2>> "$P/bpftool.err"
	kill -INT $STREAM_PID
	i=0
	while kill -0 $STREAM_PID 2> /dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
	kill -KILL $STREAM_PID 2> /dev/null
	wait $STREAM_PID
	echo $? > "$P/rc"
	if [ "$1" != msitrace ]; then
		# Lines as bpftrace delivered them, by msitrace's probe name, and its own loss reports;
		# the bulk is not brought back (the output disk holds one tar of /out).
		awk '/^Lost [0-9]+ events/ { lost += $2; next }
			/^Attaching / { next }
			/^[A-Z][A-Za-z]+ [0-9]/ { n[$1]++; total++ }
			END { printf "delivered=%d lost=%d\n", total, lost; for (k in n) printf "%s=%d\n", k, n[k] }' \
			"$P/out.txt" > "$P/lines"
		head -n 20 "$P/out.txt" > "$P/sample.txt"
		rm -f "$P/out.txt"
	fi
	say "stream step=$ID pass=$2 tool=$1 $(cat "$P/burst") rc=$(cat "$P/rc") $(head -1 "$P/lines" 2> /dev/null)"
}

step_stream() {
	# The service's programs on the same hooks would slow every phase's workload alike but
	# compete with each consumer for the two vCPUs: it sits the step out.
	systemctl stop msitrace 2> /dev/null
	STREAM_IRQS=$(awk '$1 ~ /^vector=/ { split($2, i, "="); print i[2] }' $STUB/state)
	STREAM_OFF=$(stream_pci_dev_off)
	[ -n "$STREAM_OFF" ] || { echo "no offset of pci_dev.dev in the kernel's BTF" > "$D/error"; return 1; }
	echo "$STREAM_OFF" > "$D/pci_dev_off"
	msitrace probes --json --timings > "$D/probes.json" 2> "$D/probes.err"
	# The run's probes row, when this step runs alone.
	[ -e /out/probes.json ] || cp "$D/probes.json" /out/probes.json
	{
		# Without any output to poll, bpftrace 0.17 sleeps in epoll_wait and never sees SIGINT
		# (empty phases had to be killed, even with BEGIN's line): a line every 200 ms wakes it.
		# An interval probe is a perf event, not one of the hooks the costs are read from.
		printf '%s\n' 'BEGIN { printf("attached\n"); }' 'interval:ms:200 { printf("tick\n"); }'
		grep -E '^(kprobe|kretprobe|tracepoint):' /vmt/stream.bt | sed 's/$/ {}/'
	} > "$D/empty.bt"
	STREAM_HOOKS=$(grep -cE '^(kprobe|kretprobe|tracepoint):' "$D/empty.bt")
	say "action step=$ID passes=$STREAM_PASSES rounds=$STREAM_ROUNDS uptime=$(uptime_s)"
	for pass in $(seq "$STREAM_PASSES"); do
		case $((pass % 3)) in
		1) order="msitrace bpftrace empty" ;;
		2) order="bpftrace empty msitrace" ;;
		0) order="empty msitrace bpftrace" ;;
		esac
		for tool in $order; do stream_phase $tool $pass; done
	done
	return 0
}

step() {
	NAME=$1 MODE=$2 FRONT=${3:-record} ID=$1.$2 D=/out/$1.$2
	mkdir -p "$D"
	say "step $ID begin uptime=$(uptime_s)"
	dmesg -c > /dev/null
	if ! out=$(insmod /vmt/hv_stub.ko mode="$MODE" test_cpu=1 2>&1); then
		say "error step=$ID insmod hv_stub: $out $(dmesg | tail -3 | tr '\n' ' ')"
		echo "insmod: $out" > "$D/error"
		dmesg > "$D/dmesg"
		return 1
	fi
	if [ "$NAME" = stream ]; then
		step_stream
		echo $? > "$D/action.rc"
		dmesg > "$D/dmesg"
		out=$(rmmod hv_stub 2>&1) || say "error step=$ID rmmod: $out"
		say "step $ID end uptime=$(uptime_s)"
		save
		return 0
	fi
	if [ "$NAME" = stale-mask ]; then
		step_stale_mask
		dmesg > "$D/dmesg"
		out=$(rmmod hv_stub 2>&1) || say "error step=$ID rmmod: $out"
		say "step $ID end uptime=$(uptime_s)"
		save
		return 0
	fi
	# hv_stub pins each vector at probe, and x86 moves an MSI vector at its next interrupt:
	# fire once so that the snapshots start with every vector on its CPU.
	fire_all
	sleep 0.2
	awk '$1 ~ /^vector=/ { split($2, i, "="); split($3, r, "="); if (r[2] == "control") c = i[2]; else if (r[2] == "plain") p = i[2]; else t = t (t ? "," : "") i[2] }
	     END { printf "VMT vectors step=%s control=%s test=%s plain=%s\n", step, c, t, p }' step="$ID" $STUB/state
	[ "$MSITRACE" = 1 ] && [ "$PROBES" != 0 ] && [ ! -e /out/probes.json ] && msitrace probes --json --timings > /out/probes.json 2> /out/probes.err
	snap "$D/s0"
	rec_start
	# An affinity write, as irqbalance makes them: x86 moves an MSI vector at its next
	# interrupt, masking and unmasking it through the chip, i.e. through hv_irq_mask and
	# hv_irq_unmask, as it does for pci-hyperv's vectors. The recording thus sees every
	# vector's chip callbacks before the scenario, as it would on a guest that has been up a while.
	for irq in $(awk '$1 ~ /^vector=/ { split($2, i, "="); print i[2] }' $STUB/state); do
		cat /proc/irq/$irq/smp_affinity > /proc/irq/$irq/smp_affinity
	done
	fire_spaced 3 0.2
	# msitrace samples the per-IRQ handler counts every second: let one sample see these fires
	# before a sleep, so that G5 knows the vectors were alive before the suspend. Nothing else
	# reads the samples.
	case $NAME in
	pmtest-*|s3|hibernate|hibernate-late) [ -n "$REC" ] && sleep 1.2 ;;
	esac
	snap "$D/s1"
	live before "$D/s0" "$D/s1"
	say "action step=$ID uptime=$(uptime_s)"
	act_$(echo "$NAME" | tr - _)
	echo $? > "$D/action.rc"
	T_DONE=$(uptime_s)
	say "action-done step=$ID rc=$(cat "$D/action.rc") uptime=$T_DONE"
	# After a sleep the fires span more than msitrace's one-second sampling: some must come
	# after its first sample after the resume, G5's baseline. Elsewhere they only need to be
	# apart (see fire_spaced).
	case $NAME in
	hibernate|hibernate-late) fire_spaced_with_disk 3 0.5 ;;
	pmtest-*|s3) fire_spaced 3 0.5 ;;
	*) fire_spaced 3 0.2 ;;
	esac
	snap "$D/s2"
	live after "$D/s1" "$D/s2"
	case $NAME in
	pmtest-*|s3|hibernate|hibernate-late) probes_alive_check ;;
	esac
	# G5 says a vector is silent only once it has been for its whole window after the resume:
	# where the bug silences vectors, keep recording that long, and a second more.
	case $NAME.$MODE in
	pmtest-*.buggy|s3.buggy|hibernate.buggy|hibernate-late.buggy)
		[ -n "$REC" ] && sleep "$(awk -v t="$T_DONE" -v w="$G5_SILENCE" -v now="$(uptime_s)" 'BEGIN { r = t + w + 1 - now; print (r > 0) ? r : 0 }')" ;;
	esac
	rec_stop
	case $NAME in
	s3|hibernate|hibernate-late) check_after ;;
	esac
	dmesg > "$D/dmesg"
	out=$(rmmod hv_stub 2>&1) || say "error step=$ID rmmod: $out"
	say "step $ID end uptime=$(uptime_s)"
	save
}

save() {
	[ -n "$OUTDEV" ] || return 1
	tar -cf - -C /out . | dd of="$OUTDEV" bs=64k conv=fsync 2> /dev/null
	say "saved uptime=$(uptime_s)"
}

vmt_run_plan() {
	# Plan items are scenario.mode.front.
	for item in $(echo "$PLAN" | tr , ' '); do
		step $(echo "$item" | tr . ' ')
	done
}

vmt_finish() {
	dmesg > /out/dmesg-final
	save
	say "done uptime=$(uptime_s)"
}
