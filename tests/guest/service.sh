# SPDX-License-Identifier: GPL-2.0-or-later
# The vm-test plan under systemd as PID 1 (vmt-service.service): install the project's .deb
# as an operator does (dpkg -i, systemctl enable --now msitrace), check the unit is up, and run
# the plan's steps with the service as the recorder (front `service` in vmt.sh): each step has
# the daemon restarted by a kill -9 once hv_stub is in, so that systemd's restart brings up the
# instance that records the step, under the unit's own sandbox, with the stand-in's hooks there.
# Everything the host checks lands in /out (service/ and the steps' directories).

. /vmt/vmt.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# The host's lines go through the kernel log, not a write to the serial tty: after a resume a
# user-space write to ttyS0 can block for good under TCG while printk still reaches the
# console (seen: the resumed guest's kernel lines came, the steps' lines never did).
say() { echo "<4>VMT $*" > /dev/kmsg; }
DEFAULT_MODULES=/dev/null
S=/out/service

# The properties the host reads, one `Key=value` a line.
unit_state() {
	systemctl show msitrace -p ActiveState -p SubState -p Result -p NRestarts -p MainPID \
		-p StatusText -p ExecMainStatus -p WatchdogUSec -p ExecMainStartTimestampMonotonic
}

service_install() {
	mkdir -p $S
	say "service install uptime=$(uptime_s)"
	if ! dpkg -i /vmt/msitrace.deb > $S/dpkg.log 2>&1; then
		say "error dpkg -i msitrace.deb: $(tail -2 $S/dpkg.log | tr '\n' ' ')"
		return 1
	fi
	# G5's window as vm-test's other steps use it; the file is the package's conffile.
	sed -i "s/^#silence_secs = .*/silence_secs = $G5_SILENCE/" /etc/msitrace/msitrace.toml
	# The step waits out a whole watchdog period after the resume (service_stop): the unit's
	# 30 s were a third of the run. A drop-in's 10 s proves the same thing, that the daemon
	# feeds the watchdog at the period systemd hands it (half of WATCHDOG_USEC), across the
	# resume, and is stricter: a 10 s stall now kills it. RestartSec's 5 s are waited out in
	# every step (service_kill_restart); 1 s proves the same restart.
	mkdir -p /etc/systemd/system/msitrace.service.d
	printf '[Service]\nWatchdogSec=10s\nRestartSec=1s\n' > /etc/systemd/system/msitrace.service.d/vmt-watchdog.conf
	# Type=notify: start returns once the daemon sent READY=1, or fails.
	systemctl enable --now msitrace > $S/enable.log 2>&1
	echo $? > $S/enable.rc
	unit_state > $S/ready.txt
	say "service $(tr '\n' ' ' < $S/ready.txt)"
	journalctl -o json -u msitrace --no-pager > $S/journal-start.json 2> /dev/null
	[ "$(cat $S/enable.rc)" = 0 ] || say "error msitrace.service: $(journalctl -u msitrace -o cat -n 2 --no-pager | tr '\n' ' ')"
}

# The step's end for the `service` front (vmt.sh's rec_stop): the watchdog must have been fed
# across the resume, so the unit stays up past its watchdog period after the resume, then
# `systemctl stop` ends it (SIGTERM: the trailer), and its journal and flight recorder are kept.
service_stop() {
	wd=$(systemctl show -p WatchdogUSec --value msitrace)
	wd_s=$(echo "$wd" | awk '/min/ { print 60 * $1; next } /ms/ { print 1; next } { print $1 + 0 }')
	left=$(awk -v t="$T_DONE" -v w="$wd_s" -v now="$(uptime_s)" 'BEGIN { r = t + w + 3 - now; print (r > 0) ? r : 0 }')
	say "service watching step=$ID watchdog=${wd_s}s for=${left}s"
	sleep "$left"
	unit_state > "$D/unit-before-stop.txt"
	systemctl stop msitrace
	unit_state > "$D/unit-after-stop.txt"
	systemctl show -p ExecMainStatus --value msitrace > "$D/record.rc"
	mkdir -p "$D/flight"
	cp /var/lib/msitrace/*.msit "$D/flight/" 2> /dev/null
	journalctl -o json -u msitrace --no-pager > "$D/journal.json" 2> "$D/journal.err"
	say "recorded step=$ID front=service rc=$(cat "$D/record.rc") files=$(ls "$D/flight" | wc -l)"
}

# kill -9: Restart=on-failure brings it back after RestartSec, and the new instance is a whole
# service again (READY=1, its own flight-recorder file, a trailer at stop). The step's recorder
# (vmt.sh's rec_start): started as systemd restarts it, with hv_stub loaded, its header lists
# what the unit's sandbox let it attach.
service_kill_restart() {
	mkdir -p $S/restart
	old=$(systemctl show -p MainPID --value msitrace)
	echo "$old" > $S/restart/killed-pid
	# `kill -9 0` would kill this script's own process group.
	[ "$old" != 0 ] || { say "error msitrace.service has no main process to kill"; return 1; }
	say "service kill-9 pid=$old"
	t0=$(uptime_s)
	kill -9 "$old"
	# No new instance before RestartSec: wait that out first, then poll twice a second. Each
	# systemctl call costs the guest a good tenth of a second of CPU under TCG, and polling
	# ten times a second from the kill on took 10 s of the run's CPU (15 s of wall).
	delay=$(systemctl show -p RestartUSec --value msitrace | awk '/min/ { print 60 * $1; next } /ms/ { print 0; next } { print $1 + 0 }')
	sleep "${delay:-0}"
	i=0
	while [ $i -lt 60 ]; do
		new=$(systemctl show -p MainPID --value msitrace)
		[ "$new" != 0 ] && [ "$new" != "$old" ] && systemctl is-active -q msitrace && break
		sleep 0.5
		i=$((i + 1))
	done
	unit_state > $S/restart/after-kill.txt
	say "service restarted after=$(awk -v t="$t0" -v now="$(uptime_s)" 'BEGIN { printf "%.1f", now - t }')s $(tr '\n' ' ' < $S/restart/after-kill.txt)"
}

# After the plan: the instance systemd restarted has been stopped (service_stop); its state,
# its files and the journals. A plan with no service step (the stream step alone) has the kill
# done here, with the stand-in loaded as a step has it.
service_collect() {
	if [ ! -e $S/restart/killed-pid ]; then
		insmod /vmt/hv_stub.ko mode=fixed test_cpu=1 2> $S/insmod.err
		systemctl start msitrace
		service_kill_restart
		sleep 2
		systemctl stop msitrace
		rmmod hv_stub
	fi
	unit_state > $S/restart/after-stop.txt
	cp /var/lib/msitrace/*.msit $S/restart/ 2> /dev/null
	journalctl -o json -u msitrace --no-pager > $S/journal.json 2> /dev/null
	# systemd's own lines about the unit (watchdog, restarts) are in the system journal.
	journalctl -o json UNIT=msitrace.service --no-pager > $S/systemd.json 2> /dev/null
}

vmt_params
vmt_find_disks
vmt_settings
say "systemd $(systemctl is-system-running 2>&1) pid1=$(cat /proc/1/comm)"
if service_install; then
	vmt_run_plan
	service_collect
fi
vmt_finish
