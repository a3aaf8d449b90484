//! The plugin's side of QEMU's plugin API (include/qemu/qemu-plugin.h; register reads need
//! QEMU 9.0 or later).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::count::{Count, Frames, Table, is_mark, is_prog_entry, is_ret};

type PluginId = u64;

#[repr(C)]
pub struct QemuInfo {
    target_name: *const c_char,
    version_min: c_int,
    version_cur: c_int,
    system_emulation: bool,
}

#[repr(C)]
struct GArray {
    data: *mut u8,
    len: c_uint,
}

#[repr(C)]
struct RegDescriptor {
    handle: *mut c_void,
    name: *const c_char,
    feature: *const c_char,
}

const CB_R_REGS: c_int = 1;

unsafe extern "C" {
    fn qemu_plugin_register_vcpu_init_cb(id: PluginId, cb: extern "C" fn(PluginId, c_uint));
    fn qemu_plugin_register_vcpu_tb_trans_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut c_void),
    );
    fn qemu_plugin_register_atexit_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut c_void),
        udata: *mut c_void,
    );
    fn qemu_plugin_tb_n_insns(tb: *const c_void) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const c_void) -> u64;
    fn qemu_plugin_tb_get_insn(tb: *const c_void, idx: usize) -> *mut c_void;
    fn qemu_plugin_insn_data(insn: *const c_void, dest: *mut c_void, len: usize) -> usize;
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut c_void,
        cb: extern "C" fn(c_uint, *mut c_void),
        flags: c_int,
        udata: *mut c_void,
    );
    fn qemu_plugin_register_vcpu_tb_exec_cb(
        tb: *mut c_void,
        cb: extern "C" fn(c_uint, *mut c_void),
        flags: c_int,
        udata: *mut c_void,
    );
    fn qemu_plugin_get_registers() -> *mut GArray;
    fn qemu_plugin_read_register(handle: *mut c_void, buf: *mut GArray) -> c_int;
    fn g_byte_array_new() -> *mut GArray;
    fn g_byte_array_set_size(a: *mut GArray, len: c_uint) -> *mut GArray;
}

#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 2;

/// Kernel addresses on x86-64: the programs, their helpers and hv_stub's mark all run there.
const KERNEL: u64 = 0xffff_8000_0000_0000;
/// x86-64's module area (MODULES_VADDR under KASLR, Debian's default: the kernel image may lie
/// anywhere in the gigabyte below it, at 0xffffffffb5c8… in one guest), where the JIT's images
/// and modules' code live. The guests boot with `mitigations=off`: a program returns by its own
/// `ret`, not a thunk in the kernel's text.
const MODULES: u64 = 0xffff_ffff_c000_0000;

struct State {
    out: File,
    mark: u64,
    table: Table,
    vcpus: Vec<Frames>,
    /// Each vCPU's kernel GS base (its per-CPU area), in the order first seen: its index here
    /// is the vCPU a callback runs on (see [`State::vcpu`]).
    gs_bases: Vec<u64>,
    rsp: *mut c_void,
    rdi: *mut c_void,
    gs_base: *mut c_void,
    buf: *mut GArray,
}

// QEMU's handles are plain tokens, used under the lock only.
unsafe impl Send for State {}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state(f: impl FnOnce(&mut State)) {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = g.as_mut() {
        f(s);
    }
}

impl State {
    fn read(&mut self, reg: *mut c_void) -> Option<u64> {
        if reg.is_null() {
            return None;
        }
        unsafe {
            g_byte_array_set_size(self.buf, 0);
            if qemu_plugin_read_register(reg, self.buf) < 8 || (*self.buf).len < 8 {
                return None;
            }
            let bytes = std::slice::from_raw_parts((*self.buf).data, 8);
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        }
    }

    /// The vCPU this callback runs on. Not the index QEMU passes: without MTTCG (and
    /// `-icount` rules it out) QEMU bakes the index of the vCPU that translated a block into
    /// its callbacks (plugin-gen.c, gen_cpu_index: a constant unless CF_PARALLEL), and the
    /// vCPUs share their blocks, so a helper translated on one vCPU reported every later run
    /// on the other as the first's. The kernel's GS base is each CPU's per-CPU area, read at
    /// run time. Kernel code running with a user GS base (the entry code before `swapgs`) is
    /// none of a program's: None. The per-CPU areas are in the direct map, which `-cpu max`'s
    /// 5-level paging puts at 0xff11…, below [`KERNEL`]: any upper-half address is the kernel's.
    fn vcpu(&mut self) -> Option<usize> {
        let gs = self.read(self.gs_base)?;
        if gs >> 63 == 0 {
            return None;
        }
        if let Some(i) = self.gs_bases.iter().position(|&g| g == gs) {
            return Some(i);
        }
        if self.gs_bases.len() == MAX_VCPUS {
            return None;
        }
        self.gs_bases.push(gs);
        Some(self.gs_bases.len() - 1)
    }

    fn frames(&mut self, vcpu: usize) -> &mut Frames {
        if self.vcpus.len() <= vcpu {
            self.vcpus.resize_with(vcpu + 1, Frames::default);
        }
        &mut self.vcpus[vcpu]
    }

    fn set_depth(&mut self) {
        let open: u64 = self.vcpus.iter().map(|f| f.depth() as u64).sum();
        OPEN.store(open, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        if self.mark != 0 {
            let lines = self.table.take_lines(self.mark);
            let _ = self.out.write_all(lines.as_bytes());
            let _ = self.out.flush();
        } else {
            self.table = Table::default();
        }
    }
}

/// The entry block's address in its low 48 bits (kernel addresses have the top 16 set) and
/// its instruction count above. The entry block's own count is added here, not by
/// [`on_tb_exec`]: blocks are counted only while a program is open, and this one opens it.
extern "C" fn on_entry(_: c_uint, udata: *mut c_void) {
    let packed = udata as u64;
    let addr = packed | 0xffff_0000_0000_0000;
    let n = packed >> 48;
    with_state(|s| {
        let Some(sp) = s.read(s.rsp) else { return };
        let Some(vcpu) = s.vcpu() else { return };
        let start = count(vcpu);
        add(vcpu, n, true);
        let mut table = std::mem::take(&mut s.table);
        s.frames(vcpu).enter(addr, sp, start, &mut table);
        s.table = table;
        s.set_depth();
    });
}

extern "C" fn on_ret(_: c_uint, _: *mut c_void) {
    if OPEN.load(Ordering::Relaxed) == 0 {
        return;
    }
    with_state(|s| {
        let Some(sp) = s.read(s.rsp) else { return };
        let Some(vcpu) = s.vcpu() else { return };
        let count = count(vcpu);
        let mut table = std::mem::take(&mut s.table);
        s.frames(vcpu).ret(sp, count, &mut table);
        s.table = table;
        s.set_depth();
    });
}

/// The programs open on all vCPUs: blocks are counted, and returns looked at, only while one is.
static OPEN: AtomicU64 = AtomicU64::new(0);

/// Per vCPU: the kernel instructions it ran while a program was open (its blocks', counted as
/// each block starts), and those of them in the module area.
static COUNT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static CODE: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
const MAX_VCPUS: usize = 64;

fn count(vcpu: usize) -> Count {
    let load = |a: &[AtomicU64; MAX_VCPUS]| a.get(vcpu).map_or(0, |c| c.load(Ordering::Relaxed));
    Count {
        all: load(&COUNT),
        code: load(&CODE),
    }
}

fn add(vcpu: usize, n: u64, in_modules: bool) {
    if let Some(c) = COUNT.get(vcpu) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    if in_modules && let Some(c) = CODE.get(vcpu) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A block's udata: its instruction count, [`IN_MODULES`] for a block in the module area, and
/// [`ENTRY`] for a program's entry block, which [`on_entry`] counts.
const IN_MODULES: u64 = 1 << 63;
const ENTRY: u64 = 1 << 62;

extern "C" fn on_tb_exec(_: c_uint, udata: *mut c_void) {
    let u = udata as u64;
    if u & ENTRY != 0 || OPEN.load(Ordering::Relaxed) == 0 {
        return;
    }
    with_state(|s| {
        if let Some(vcpu) = s.vcpu() {
            add(vcpu, u & !(IN_MODULES | ENTRY), u & IN_MODULES != 0);
        }
    });
}

extern "C" fn on_mark(_: c_uint, _: *mut c_void) {
    with_state(|s| {
        let Some(mark) = s.read(s.rdi) else { return };
        s.flush();
        s.mark = mark;
    });
}

extern "C" fn on_tb(_: PluginId, tb: *mut c_void) {
    let vaddr = unsafe { qemu_plugin_tb_vaddr(tb) };
    if vaddr < KERNEL {
        return;
    }
    let n = unsafe { qemu_plugin_tb_n_insns(tb) };
    let mut flag = if vaddr >= MODULES { IN_MODULES } else { 0 };
    if vaddr >= MODULES && n > 0 && n < 1 << 16 && is_prog_entry(&head(tb, n)) {
        flag |= ENTRY;
    }
    // A callback, not QEMU's inline ops: with -icount, QEMU 10.0's per-vCPU inline add
    // corrupted the guest (sha1's self-test failed, then invalid opcodes in the boot), and
    // inline ops could not tell the vCPU anyway (State::vcpu). R_REGS: it reads the GS base.
    unsafe {
        qemu_plugin_register_vcpu_tb_exec_cb(
            tb,
            on_tb_exec,
            CB_R_REGS,
            (n as u64 | flag) as *mut c_void,
        )
    };
    // Programs and their returns are in the module area, where the JIT puts them; the
    // helpers they call run in the kernel's text and are only counted.
    if vaddr < MODULES {
        return;
    }
    for i in 0..n {
        let insn = unsafe { qemu_plugin_tb_get_insn(tb, i) };
        let mut bytes = [0u8; 16];
        let len = unsafe { qemu_plugin_insn_data(insn, bytes.as_mut_ptr().cast(), bytes.len()) };
        let bytes = &bytes[..len.min(16)];
        if is_ret(bytes) {
            unsafe {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    on_ret,
                    CB_R_REGS,
                    std::ptr::null_mut(),
                )
            };
        } else if is_mark(bytes) {
            unsafe {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    on_mark,
                    CB_R_REGS,
                    std::ptr::null_mut(),
                )
            };
        }
    }
    if flag & ENTRY != 0 {
        let packed = (vaddr & 0x0000_ffff_ffff_ffff) | ((n as u64) << 48);
        unsafe {
            qemu_plugin_register_vcpu_insn_exec_cb(
                qemu_plugin_tb_get_insn(tb, 0),
                on_entry,
                CB_R_REGS,
                packed as *mut c_void,
            )
        };
    }
}

/// The bytes of a block's first six instructions, where the JIT's prologue is.
fn head(tb: *mut c_void, n: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(32);
    for i in 0..n.min(6) {
        let insn = unsafe { qemu_plugin_tb_get_insn(tb, i) };
        let mut bytes = [0u8; 16];
        let len = unsafe { qemu_plugin_insn_data(insn, bytes.as_mut_ptr().cast(), bytes.len()) };
        head.extend_from_slice(&bytes[..len.min(16)]);
    }
    head
}

extern "C" fn on_vcpu_init(_: PluginId, _: c_uint) {
    with_state(|s| {
        if !s.rsp.is_null() {
            return;
        }
        unsafe {
            let regs = qemu_plugin_get_registers();
            if regs.is_null() {
                return;
            }
            let descs = std::slice::from_raw_parts(
                (*regs).data as *const RegDescriptor,
                (*regs).len as usize,
            );
            for d in descs {
                match CStr::from_ptr(d.name).to_bytes() {
                    b"rsp" => s.rsp = d.handle,
                    b"rdi" => s.rdi = d.handle,
                    b"gs_base" => s.gs_base = d.handle,
                    _ => {}
                }
            }
        }
    });
}

extern "C" fn on_exit(_: PluginId, _: *mut c_void) {
    with_state(State::flush);
}

/// # Safety
/// Called by QEMU once, with its own `info` and `argc` arguments in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    info: *const QemuInfo,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let info = unsafe { &*info };
    if !info.system_emulation || info.version_cur < 2 {
        eprintln!("guest-insns: needs system emulation and QEMU 9.0 or later");
        return 1;
    }
    let target = unsafe { CStr::from_ptr(info.target_name) }.to_string_lossy();
    if target != "x86_64" {
        eprintln!("guest-insns: knows the x86-64 BPF JIT only, not {target}");
        return 1;
    }
    let mut out = None;
    for i in 0..argc.max(0) as usize {
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        if let Some(path) = arg.strip_prefix("out=") {
            out = Some(path.to_string());
        }
    }
    let Some(path) = out else {
        eprintln!("guest-insns: give the output file: -plugin <lib>,out=<file>");
        return 1;
    };
    let out = match File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("guest-insns: cannot create {path}: {e}");
            return 1;
        }
    };
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(State {
        out,
        mark: 0,
        table: Table::default(),
        vcpus: Vec::new(),
        gs_bases: Vec::new(),
        rsp: std::ptr::null_mut(),
        rdi: std::ptr::null_mut(),
        gs_base: std::ptr::null_mut(),
        buf: unsafe { g_byte_array_new() },
    });
    unsafe {
        qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
        qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    }
    0
}
