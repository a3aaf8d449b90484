//! What a probe records about one MSI/MSI-X vector, from its `struct irq_data` or its
//! `struct msi_desc`: identity, the msi_desc mask cache, genirq's state bits, the Hyper-V
//! `chip_data` and the owning device. Each part is filled (and flagged valid) only when the
//! layout has the fields and the reads succeed.

use tracer_common::{RawEvent, flags};

use crate::{
    NAMED,
    read::{self, layout},
};

/// The name of a `struct device` (`dev->kobj.name`: the BDF of a PCI device).
#[inline(always)]
pub fn device_name(ev: &mut RawEvent, dev: u64) {
    let Some(name) = read::kernel(dev, layout!(device_kobj_name)) else {
        return;
    };
    if read::kernel_str(name, &mut ev.name) {
        ev.flags |= flags::NAME_VALID;
    }
}

/// genirq's view from `irq_common_data.state_use_accessors`. The bit values come from the
/// kernel's `enum irqd_bits` via BTF; 0 (or the compiled-in all-ones) means unknown.
#[inline(always)]
fn irqd_state(ev: &mut RawEvent, state: u64) {
    let known = |m: u32| m != 0 && m != u32::MAX;
    let masked = layout!(irqd_irq_masked);
    let disabled = layout!(irqd_irq_disabled);
    if !known(masked) || !known(disabled) {
        return;
    }
    let state = state as u32;
    let mut f = flags::IRQD_VALID;
    if state & masked != 0 {
        f |= flags::IRQD_MASKED;
    }
    if state & disabled != 0 {
        f |= flags::IRQD_DISABLED;
    }
    let managed = layout!(irqd_affinity_managed);
    if known(managed) && state & managed != 0 {
        f |= flags::MANAGED;
    }
    let shutdown = layout!(irqd_managed_shutdown);
    if known(shutdown) && state & shutdown != 0 {
        f |= flags::MANAGED_SHUTDOWN;
    }
    ev.flags |= f;
}

/// Index, MSI or MSI-X, the mask cache and the device, from a `struct msi_desc *`. `ev.irq`
/// must already hold the vector's Linux IRQ (multi-MSI: one bit per IRQ from `desc->irq`),
/// unless `irq_from_desc` asks for `desc->irq`. Returns `desc->dev` (0 when unknown).
#[inline(always)]
pub fn from_msi_desc(ev: &mut RawEvent, desc: u64, irq_from_desc: bool) -> u64 {
    if desc == 0 {
        return 0;
    }
    let dev = {
        read::block!(b = desc, 16, span_msi_desc);
        if irq_from_desc && let Some(irq) = b.get(layout!(msi_desc_irq)) {
            ev.irq = irq as u32;
        }
        if let Some(index) = b.get(layout!(msi_desc_msi_index)) {
            ev.msi_index = index as u32;
        }
        if let Some(msix) = b.get(layout!(msi_desc_is_msix)) {
            ev.flags |= flags::MSIX_VALID;
            if msix != 0 {
                ev.flags |= flags::MSIX;
                if let Some(ctrl) = b.get(layout!(msi_desc_msix_ctrl)) {
                    ev.flags |= flags::MASK_VALID;
                    if ctrl & 1 != 0 {
                        ev.flags |= flags::MASKED;
                    }
                }
            } else if let (Some(mask), Some(base)) = (
                b.get(layout!(msi_desc_msi_mask)),
                b.get(layout!(msi_desc_irq)),
            ) {
                let base = base as u32;
                if ev.irq >= base && ev.irq - base < 32 {
                    ev.flags |= flags::MASK_VALID;
                    if (mask >> (ev.irq - base)) & 1 != 0 {
                        ev.flags |= flags::MASKED;
                    }
                }
            }
        }
        b.get(layout!(msi_desc_dev)).unwrap_or(0)
    };
    if dev != 0 {
        cached_device_name(ev, dev);
    }
    dev
}

/// [`device_name`], sent once per IRQ and device: a record whose IRQ's last named record came
/// from the same `struct device` carries `NAME_VALID` with an empty name, which userspace
/// fills in from that record (`tracer::event::NameCache`) before anything else sees it. The
/// name's two reads (its pointer, then the string) are a third of a vector record's helper
/// calls, and a burst names the same few devices thousands of times. The slot is written
/// only for a record that holds the name, after its reservation: that record is ahead of
/// every record that relies on it in the ring.
#[inline(always)]
fn cached_device_name(ev: &mut RawEvent, dev: u64) {
    let slot = NAMED.get_ptr_mut(ev.irq);
    if let Some(last) = slot
        // SAFETY: an aligned array slot; a racing CPU at worst sends the name once more.
        && unsafe { *last } == dev
    {
        ev.flags |= flags::NAME_VALID;
        return;
    }
    device_name(ev, dev);
    if ev.flags & flags::NAME_VALID != 0
        && ev.name[0] != 0
        && let Some(last) = slot
    {
        // SAFETY: as above.
        unsafe { *last = dev };
    }
}

/// The vector seen from a `struct irq_data *`. `chip_and_domain` puts the chip and domain
/// pointers in `a[0]`/`a[1]` (return probes use those slots for the message instead).
#[inline(always)]
pub fn from_irq_data(ev: &mut RawEvent, d: u64, chip_and_domain: bool) {
    if d == 0 {
        return;
    }
    let common = {
        read::block!(b = d, 8, span_irq_data);
        if let Some(irq) = b.get(layout!(irq_data_irq)) {
            ev.irq = irq as u32;
        }
        if let Some(hwirq) = b.get(layout!(irq_data_hwirq)) {
            ev.hwirq = hwirq;
        }
        if chip_and_domain {
            ev.a[0] = b.get(layout!(irq_data_chip)).unwrap_or(0);
            ev.a[1] = b.get(layout!(irq_data_domain)).unwrap_or(0);
        }
        if let Some(chip_data) = b.get(layout!(irq_data_chip_data)) {
            ev.a[3] = chip_data;
            ev.flags |= flags::CHIP_DATA_VALID;
        }
        b.get(layout!(irq_data_common))
    };
    let Some(common) = common else {
        return;
    };
    let desc = {
        read::block!(b = common, 8, span_irq_common);
        if let Some(state) = b.get(layout!(irq_common_state)) {
            irqd_state(ev, state);
        }
        b.get(layout!(irq_common_msi_desc))
    };
    if let Some(desc) = desc {
        from_msi_desc(ev, desc, false);
    }
}

/// A `struct msi_msg *` into `a[0]` (address, hi << 32 | lo) and `a[1]` (data).
#[inline(always)]
pub fn msg(ev: &mut RawEvent, msg: u64) {
    read::block!(b = msg, 2, span_msi_msg);
    let lo = b.get(layout!(msi_msg_address_lo));
    let hi = b.get(layout!(msi_msg_address_hi));
    let data = b.get(layout!(msi_msg_data));
    if let (Some(lo), Some(hi), Some(data)) = (lo, hi, data) {
        ev.a[0] = (hi << 32) | (lo & 0xffff_ffff);
        ev.a[1] = data & 0xffff_ffff;
        ev.flags |= flags::MSG_VALID;
    }
}
