// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * hv_stub: stands in for pci-hyperv's MSI code on a guest that is not on Hyper-V, so that
 * msitrace's kprobes on hv_compose_msi_msg / hv_irq_unmask / hv_irq_mask fire on real MSI-X
 * vectors and the two bugs fixed by upstream 915cff7f38c5 can be reproduced, or not, at will.
 *
 * What is real:
 *  - the device: QEMU's e1000e (8086:10d3), its MSI-X table with a per-vector mask bit, its
 *    interrupt cause registers, and the interrupts it really raises; Linux's e1000e driver is
 *    not loaded and this module binds the device itself;
 *  - the IRQs, their x86 vectors and CPUs, genirq's state, the msi_desc mask cache, and every
 *    kernel path that touches them: request_irq's activation, the CPU-offline migration
 *    (migrate_one_irq calls the chip's mask/unmask), the PCI core's pci_restore_msi_state on
 *    resume/thaw/restore and after a function reset, suspend, S3 and hibernation;
 *  - the names and prototypes of hv_compose_msi_msg, hv_pci_compose_compl, hv_irq_unmask,
 *    hv_irq_mask, hv_pci_suspend, hv_pci_resume and hv_pci_restore_msi_msg, and the places they
 *    are called from: the chip
 *    callbacks of every vector (a copy of the vector's own chip, named "Hyper-V PCIe MSI" as
 *    pci-hyperv's is, so /proc/interrupts shows what it shows on Hyper-V), and the noirq PM
 *    callbacks of a "vmbus" supplier device that run before the PCI core restores the device,
 *    as pci-hyperv's vmbus parent's do.
 *
 * What is emulated, because there is no Hyper-V host here:
 *  - the host's interrupt entry (IRTE): hv_compose_msi_msg stores the message it composed in a
 *    per-vector struct stub_irte and points irq_data->chip_data at it, as pci-hyperv does with
 *    its struct tran_int_desc; the message itself is the one x86 would use (the parent
 *    domain's compose), so it really routes;
 *  - the host's reply to a compose request: hv_compose_msi_msg hands hv_pci_compose_compl a reply
 *    (status 0: the emulated host grants every request that reaches it) with a completion
 *    context on its own stack, as pci-hyperv's channel callback does with the host's packet;
 *  - the vmbus channel: hv_pci_suspend sets the bus "removing" (the channel is closed), and
 *    while it is, the RETARGET hypercall behind hv_irq_unmask fails, as it did with status
 *    0x5 on Hyper-V while secondary CPUs went offline;
 *  - the host forgetting its mapping across the teardown: when hv_pci_resume does not re-compose
 *    a vector (buggy mode), the message the PCI core is about to restore no longer routes.
 *    The module makes that concrete by rewriting the cached message's destination APIC ID
 *    (address bits 19:12) to 0xF0, which no vCPU has. The address stays inside the
 *    0xFEExxxxx interrupt window, so QEMU drops the interrupt; it is never a RAM address
 *    (a bus-master write outside that window would land in guest memory).
 *
 * Modes (module parameter "mode"):
 *  - fixed: what pci-hyperv does since 915cff7f38c5. hv_irq_unmask always reaches the device
 *    unmask the kernel's own pci-hyperv reaches (see "What each kernel's pci-hyperv calls"
 *    below), and hv_pci_resume re-composes every vector (hv_pci_restore_msi_msg) before the
 *    PCI core restores the device.
 *  - opaque: fixed, but the interrupt entry is kept in the stub's own vector, never in
 *    irq_data->chip_data: a pci-hyperv-like driver whose private conventions differ, on which
 *    msitrace must not report what the kernel did not do (no H3, no H5).
 *  - buggy: what it did before. hv_irq_unmask returns early when the retarget fails, leaving
 *    the vector masked in the device table and in the msi_desc cache while genirq believes it
 *    is enabled (bug 2); hv_pci_resume does not re-compose, so the PCI core restores a message
 *    the host no longer maps (bug 1). Where pci-hyperv is an MSI parent domain (6.17 and
 *    later), hv_irq_unmask still returns early, but the device unmask is the per-device chip's
 *    and comes after hv_irq_unmask returns, whatever it did: bug 2 cannot leave the vector
 *    masked there, as it cannot on a real 6.17 guest, and only bug 1 cuts the vectors off.
 *    "state" says which (hv_unmasks_device=1: bug 2 possible; 0: not).
 *
 * Vector 0 is a control: pinned to CPU 0, which is never offlined, so the migration never
 * touches it; and hv_pci_resume re-composes it in every mode. It must stay clean in every
 * scenario, on the same device, chip and suspend path as the vectors the bugs hit; the test
 * vectors 1 and 2 are pinned to the CPU that scenarios offline (parameter test_cpu).
 *
 * debugfs (/sys/kernel/debug/hv_stub/): "fire" takes a vector index or "all" and makes the
 * device raise that interrupt; "state" prints the mode, the bus, and per vector its IRQ, CPU,
 * counters and the real table/cache/genirq mask bits. "stale_mask" takes a vector index and
 * leaves that vector masked in the device (its MSI-X vector-control mask bit, in the table
 * and in the msi_desc cache, as the buggy unmask leaves them) without telling genirq, which
 * keeps it enabled: the state `msitrace check` must find with no sleep and no trace. "clear"
 * unmasks it again, in the table and the cache, unless genirq has masked it since; one vector
 * at a time (a second index first clears the first). "mark" takes a number and marks the
 * stream step's phases for the host's instruction counts (stub_mark).
 *
 * What each kernel's pci-hyperv calls (drivers/pci/controller/pci-hyperv.c at the tag, and the
 * same calls seen in the relocations of Debian's own pci-hyperv.ko hv_irq_mask/hv_irq_unmask for
 * 5.10.0-46, 6.1.0-57 and 6.12.117+deb12), and the hv_stub path that mirrors it. The gates are
 * what Kbuild finds in the headers the module is built against, never a version number:
 *  - pci-hyperv.c@v5.10, hv_irq_mask(): pci_msi_mask_irq(data). hv_irq_unmask(): the
 *    RETARGET_INTERRUPT hypercall, then pci_msi_unmask_irq(data), reached also when the
 *    hypercall failed (915cff7f38c5 is in v5.10-rc1). No parent calls.
 *    hv_stub: neither HV_STUB_MSI_DESC_PCI nor HV_STUB_MSI_PARENT.
 *  - pci-hyperv.c@v6.1 and @v6.12, hv_irq_mask(): pci_msi_mask_irq(data), then
 *    irq_chip_mask_parent(data) if the parent chip has an irq_mask. hv_irq_unmask():
 *    hv_arch_irq_unmask(data) (the hypercall; inlined by Debian's builds), then
 *    irq_chip_unmask_parent(data) if the parent chip has an irq_unmask, then
 *    pci_msi_unmask_irq(data). pci-hyperv keeps a legacy (non-parent) MSI domain there, so
 *    these are the device mask and unmask, on 6.12 too, where the PCI core's own per-device
 *    domains use pci_irq_(un)mask_msix instead. hv_stub: HV_STUB_MSI_DESC_PCI (struct
 *    pci_msi_desc, 5.17) is the header fact that separates this form from 5.10's: no header
 *    marks the parent calls themselves, which came with arm64 vPCI support in between. On x86
 *    the parent is the vector domain, whose chip has no irq_mask/irq_unmask: the parent calls
 *    are written as upstream has them and never run.
 *  - pci-hyperv.c@v6.17 (5f83d6337c9c, msi_create_parent_irq_domain) and 7.3.4+deb13, where
 *    it is built in: hv_irq_mask() is only irq_chip_mask_parent(data) if the parent chip has an
 *    irq_mask; hv_irq_unmask() is hv_arch_irq_unmask(data), then irq_chip_unmask_parent(data)
 *    if the parent chip has an irq_unmask; neither calls pci_msi_(un)mask_irq. They are the
 *    parent callbacks of the per-device PCI/MSI-X chip (MSI_FLAG_PCI_MSI_MASK_PARENT), whose
 *    pci_irq_mask_msix() masks the device then calls down to hv_irq_mask, and whose
 *    pci_irq_unmask_msix() calls down to hv_irq_unmask then unmasks the device
 *    (drivers/pci/msi/irqdomain.c@v6.17, cond_mask_parent/cond_unmask_parent).
 *    hv_stub: HV_STUB_MSI_PARENT. hv_stub has no domain level of its own, so the vector's chip
 *    gets stub_msix_mask/stub_msix_unmask, which do what pci_irq_(un)mask_msix do around the
 *    hv_* call, the device part by the kernel's own pci_irq_(un)mask_msix. One difference
 *    stays: on a real 6.17 guest pci_irq_unmask_msix is entered before hv_irq_unmask (the
 *    device write comes after either way); here it is entered after hv_irq_unmask returns.
 *  - hv_compose_msi_msg(): on every one of these the host's reply completes the request
 *    through hv_pci_compose_compl() (the channel callback) and the message comes from the
 *    host's tran_int_desc, stored in the irq_data's chip_data; hv_stub's emulation below is the
 *    same on every kernel (on 6.17 the irq_data is the hv domain's level, here the vector's
 *    only one, which is the one msitrace's kprobe reads either way).
 */
#include <linux/atomic.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/irq.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/msi.h>
#include <linux/pci.h>
#include <linux/platform_device.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/syscore_ops.h>

/*
 * The msi_desc's MSI-X fields: under desc->pci since 5.17 (struct pci_msi_desc, Kbuild decides
 * from the headers); on 5.10 the vector-control cache is `masked` and the index
 * msi_attrib.entry_nr.
 */
#ifdef HV_STUB_MSI_DESC_PCI
#define STUB_MASK_BASE(d) ((d)->pci.mask_base)
#define STUB_MSIX_INDEX(d) ((d)->msi_index)
#define STUB_MSIX_CTRL(d) ((d)->pci.msix_ctrl)
#else
#define STUB_MASK_BASE(d) ((d)->mask_base)
#define STUB_MSIX_INDEX(d) ((d)->msi_attrib.entry_nr)
#define STUB_MSIX_CTRL(d) ((d)->masked)
#endif
#include <linux/uaccess.h>

#define STUB_NAME "hv_stub"
#define STUB_NVEC 4
#define STUB_CONTROL 0
/*
 * An ordinary vector of the same device: the kernel's own chip (no hv_* callbacks), pinned to
 * CPU 0, disabled by the driver's suspend callbacks and enabled again by its resume ones, so
 * that genirq masks it in the device across every sleep and unmasks it after (through
 * pci_irq_mask_msix/pci_irq_unmask_msix on kernels with per-device MSI domains, 6.2 and later;
 * through pci_msi_mask_irq/pci_msi_unmask_irq before). It must stay clean: G1 must see that
 * unmask.
 */
#define STUB_PLAIN 3

/* e1000e registers (BAR0) used to raise interrupts on demand. */
#define E1000_STATUS 0x0008
#define E1000_ICR 0x00c0
#define E1000_ICS 0x00c8
#define E1000_IMS 0x00d0
#define E1000_IMC 0x00d8
#define E1000_IVAR 0x00e4
/* Causes RXQ0, RXQ1, TXQ0, TXQ1 are ICR bits 20, 21, 22, 23. */
#define E1000_CAUSE_BASE 20
/*
 * IVAR: RXQ0 -> vector 0, RXQ1 -> vector 1, TXQ0 -> vector 2, TXQ1 -> vector 3, each 3 bits +
 * a valid bit.
 */
#define E1000_IVAR_MAP 0x0000ba98

/* Destination APIC ID no vCPU has: the "mapping the host forgot" (see the top comment). */
#define STUB_NOWHERE_APIC_ID 0xf0
#define MSI_ADDR_DEST_SHIFT 12
#define MSI_ADDR_DEST_MASK 0x000ff000

static char *mode = "fixed";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "fixed (pci-hyperv since 915cff7f38c5), buggy (before it), or opaque (fixed, its interrupt entry kept off irq_data->chip_data)");

static unsigned int test_cpu = 1;
module_param(test_cpu, uint, 0444);
MODULE_PARM_DESC(test_cpu, "CPU the test vectors are pinned to (the one scenarios offline)");

static bool buggy;
static bool opaque;

/* The emulated host interrupt entry, what pci-hyperv keeps as struct tran_int_desc. */
struct stub_irte {
	u32 generation;
	struct msi_msg msg;
};

struct stub_vector {
	unsigned int index;
	unsigned int irq;
	char name[24];
	struct stub_irte irte;
	void *orig_chip_data;
	struct irq_chip *orig_chip;
	atomic_t composes;
	atomic_t masks;
	atomic_t unmasks;
	atomic_t retarget_failed;
	atomic_t unmask_skipped;
	atomic_t fired;
	atomic_t handled;
	bool requested;
};

struct stub_dev {
	struct pci_dev *pdev;
	void __iomem *bar0;
	struct stub_vector vec[STUB_NVEC];
	/* The copies of the vectors' chips with the hv_* callbacks (one per distinct original). */
	struct irq_chip *chips[STUB_NVEC];
	unsigned int nchips;
	struct device_link *link;
	struct mutex fire_lock;
	/* The plain vector is disabled between a suspend-type and a resume-type callback. */
	bool plain_disabled;
};

static struct stub_dev *stub;
/* The vector "stale_mask" left masked behind genirq's back, or -1. */
static int stale_index = -1;
static DEFINE_MUTEX(stale_lock);
static struct platform_device *vmbus_pdev;
static struct dentry *stub_debugfs;

/* The emulated vmbus channel: true from hv_pci_suspend to hv_pci_resume. */
static atomic_t bus_removing = ATOMIC_INIT(0);
static atomic_t bus_suspends = ATOMIC_INIT(0);
static atomic_t bus_resumes = ATOMIC_INIT(0);
static atomic_t syscore_suspends = ATOMIC_INIT(0);
static atomic_t syscore_resumes = ATOMIC_INIT(0);

static struct stub_vector *stub_vector_of(struct irq_data *data)
{
	unsigned int i;

	if (!stub)
		return NULL;
	for (i = 0; i < STUB_NVEC; i++)
		if (stub->vec[i].irq == data->irq)
			return &stub->vec[i];
	return NULL;
}

/*
 * The host's reply to a request and the compose's completion context, as in
 * drivers/pci/controller/pci-hyperv.c: struct pci_response is the vmbus packet descriptor
 * (struct vmpacket_descriptor, 16 bytes) followed by the host's s32 status; struct
 * compose_comp_ctxt lives on hv_compose_msi_msg's stack (there a struct hv_pci_compl, whose
 * completion_status the reply sets, and the host's struct tran_int_desc).
 */
struct pci_response {
	u8 hdr[16];
	s32 status;
} __packed;

struct compose_comp_ctxt {
	int completion_status;
	struct msi_msg int_desc;
};

/* Same prototypes as drivers/pci/controller/pci-hyperv.c, where they are static. */
struct hv_device;
void hv_compose_msi_msg(struct irq_data *data, struct msi_msg *msg);
void hv_pci_compose_compl(void *context, struct pci_response *resp, int resp_packet_size);
void hv_irq_unmask(struct irq_data *data);
void hv_irq_mask(struct irq_data *data);
int hv_pci_suspend(struct hv_device *hdev);
int hv_pci_resume(struct hv_device *hdev);
int hv_pci_restore_msi_msg(struct pci_dev *pdev, void *arg);

/*
 * pci-hyperv's completion of a compose request (upstream hv_pci_compose_compl): a reply too
 * short to be one fails the request with -1, else the host's status is the result. noclone: a
 * specialised copy would take the calls and leave the named function, the kprobe's, unrun.
 */
noinline __attribute__((__noclone__)) void
hv_pci_compose_compl(void *context, struct pci_response *resp, int resp_packet_size)
{
	struct compose_comp_ctxt *comp_pkt = context;

	if (resp_packet_size < (int)sizeof(*resp)) {
		comp_pkt->completion_status = -1;
		return;
	}
	comp_pkt->completion_status = resp->status;
}

/*
 * Asks the "host" for an interrupt entry. The message is the one the x86 vector domain would
 * write (x86's PCI-MSI chip has no compose of its own, so it is the first parent that has one),
 * which is what makes the emulated entry really route. An all-zero message is a failed compose.
 * For the stub's vectors the request gets its reply through hv_pci_compose_compl with a
 * completion context on this function's stack, as upstream's hv_compose_msi_msg sends its
 * request (vmbus_sendpacket_getid) and polls the channel until hv_pci_compose_compl has run,
 * then fails the compose on a negative completion_status.
 */
noinline void hv_compose_msi_msg(struct irq_data *data, struct msi_msg *msg)
{
	struct stub_vector *v = stub_vector_of(data);
	struct compose_comp_ctxt comp;
	struct pci_response resp;
	struct irq_data *p;

	memset(msg, 0, sizeof(*msg));
	for (p = data->parent_data; p; p = p->parent_data) {
		if (p->chip && p->chip->irq_compose_msi_msg) {
			p->chip->irq_compose_msi_msg(p, msg);
			break;
		}
	}
	if (!v)
		return;
	memset(&comp, 0, sizeof(comp));
	memset(&resp, 0, sizeof(resp));
	resp.status = 0;
	comp.int_desc = *msg;
	hv_pci_compose_compl(&comp, &resp, sizeof(resp));
	if (comp.completion_status < 0) {
		memset(msg, 0, sizeof(*msg));
		return;
	}
	atomic_inc(&v->composes);
	v->irte.generation++;
	v->irte.msg = *msg;
	/* A driver may keep its remapping descriptor elsewhere (opaque mode): chip_data is
	 * pci-hyperv's convention, not something the kernel observes. */
	if (!opaque)
		data->chip_data = &v->irte;
}

/*
 * The RETARGET_INTERRUPT hypercall pci-hyperv makes from its unmask: it fails while the
 * vmbus channel is closed, i.e. from hv_pci_suspend until hv_pci_resume.
 */
static noinline bool stub_retarget(struct stub_vector *v)
{
	if (atomic_read(&bus_removing)) {
		atomic_inc(&v->retarget_failed);
		return false;
	}
	return true;
}

/*
 * The parent calls of pci-hyperv's hv_irq_mask/hv_irq_unmask since 6.1 (see the top comment):
 * irq_chip_(un)mask_parent() follow data->parent_data without looking, so upstream tests the
 * parent chip's callback first; hv_stub also tests that there is a parent.
 */
#if defined(HV_STUB_MSI_DESC_PCI) || defined(HV_STUB_MSI_PARENT)
static bool stub_parent_has(struct irq_data *data, bool unmask)
{
	struct irq_data *p = data->parent_data;

	return p && p->chip && (unmask ? p->chip->irq_unmask : p->chip->irq_mask);
}
#endif

#ifdef HV_STUB_MSI_PARENT
/* pci-hyperv.c@v6.17 hv_irq_unmask(): the hypercall, then the parent; no device unmask. */
noinline void hv_irq_unmask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	atomic_inc(&v->unmasks);
	if (!stub_retarget(v) && buggy) {
		/*
		 * Before 915cff7f38c5: return early. Here that skips only the parent unmask: the
		 * device unmask is the caller's (stub_msix_unmask, as pci_irq_unmask_msix).
		 */
		atomic_inc(&v->unmask_skipped);
		return;
	}
	if (stub_parent_has(data, true))
		irq_chip_unmask_parent(data);
}

/* pci-hyperv.c@v6.17 hv_irq_mask(): the parent only. */
noinline void hv_irq_mask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	atomic_inc(&v->masks);
	if (stub_parent_has(data, false))
		irq_chip_mask_parent(data);
}

/*
 * drivers/pci/msi/irqdomain.c@v6.17 pci_irq_mask_msix() with MSI_FLAG_PCI_MSI_MASK_PARENT:
 * pci_msix_mask(desc), then cond_mask_parent() (the hv domain's hv_irq_mask). The device part
 * is the kernel's own pci_irq_mask_msix (the vector's original chip: its domain has no
 * MASK_PARENT flag, so it stops at the device).
 */
static void stub_msix_mask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	v->orig_chip->irq_mask(data);
	hv_irq_mask(data);
}

/* pci_irq_unmask_msix(): cond_unmask_parent() (hv_irq_unmask), then pci_msix_unmask(desc). */
static void stub_msix_unmask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	hv_irq_unmask(data);
	v->orig_chip->irq_unmask(data);
}

#define STUB_CHIP_MASK stub_msix_mask
#define STUB_CHIP_UNMASK stub_msix_unmask
/* Whether hv_irq_unmask itself unmasks the device, i.e. whether bug 2 can leave it masked. */
#define STUB_HV_UNMASKS_DEVICE 0
#else
/*
 * pci-hyperv.c@v5.10 / @v6.1 / @v6.12 hv_irq_unmask(): the hypercall, [6.1, 6.12: the parent,]
 * then pci_msi_unmask_irq(data), the device unmask and its msi_desc cache.
 */
noinline void hv_irq_unmask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	atomic_inc(&v->unmasks);
	if (!stub_retarget(v) && buggy) {
		/* Before 915cff7f38c5: return without pci_msi_unmask_irq(). */
		atomic_inc(&v->unmask_skipped);
		return;
	}
#ifdef HV_STUB_MSI_DESC_PCI
	if (stub_parent_has(data, true))
		irq_chip_unmask_parent(data);
#endif
	pci_msi_unmask_irq(data);
}

/* pci-hyperv.c@v5.10 / @v6.1 / @v6.12 hv_irq_mask(): pci_msi_mask_irq(data)[, the parent]. */
noinline void hv_irq_mask(struct irq_data *data)
{
	struct stub_vector *v = stub_vector_of(data);

	if (!v)
		return;
	atomic_inc(&v->masks);
	pci_msi_mask_irq(data);
#ifdef HV_STUB_MSI_DESC_PCI
	if (stub_parent_has(data, false))
		irq_chip_mask_parent(data);
#endif
}

#define STUB_CHIP_MASK hv_irq_mask
#define STUB_CHIP_UNMASK hv_irq_unmask
#define STUB_HV_UNMASKS_DEVICE 1
#endif

/* pci-hyperv's per-function re-compose, called from hv_pci_resume since 915cff7f38c5. */
noinline int hv_pci_restore_msi_msg(struct pci_dev *pdev, void *arg)
{
	unsigned int i;

	if (!stub || stub->pdev != pdev)
		return 0;
	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &stub->vec[i];
		struct msi_desc *desc = irq_get_msi_desc(v->irq);
		struct irq_data *d = irq_get_irq_data(v->irq);

		/* The plain vector is no Hyper-V vector: the host knows nothing of it. */
		if (!v->requested || !desc || !d || i == STUB_PLAIN)
			continue;
		hv_compose_msi_msg(d, &desc->msg);
	}
	return 0;
}

/* The message of a vector nobody re-composed: the host no longer maps it. */
static void stub_forget_mapping(struct stub_vector *v)
{
	struct msi_desc *desc = irq_get_msi_desc(v->irq);

	if (!desc)
		return;
	desc->msg.address_lo = (desc->msg.address_lo & ~MSI_ADDR_DEST_MASK) |
			       (STUB_NOWHERE_APIC_ID << MSI_ADDR_DEST_SHIFT);
	desc->msg.address_hi = 0;
}

noinline int hv_pci_suspend(struct hv_device *hdev)
{
	atomic_inc(&bus_suspends);
	atomic_set(&bus_removing, 1);
	return 0;
}

noinline int hv_pci_resume(struct hv_device *hdev)
{
	unsigned int i;

	atomic_inc(&bus_resumes);
	atomic_set(&bus_removing, 0);
	if (!stub)
		return 0;
	if (!buggy)
		return hv_pci_restore_msi_msg(stub->pdev, NULL);
	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &stub->vec[i];
		struct msi_desc *desc = irq_get_msi_desc(v->irq);
		struct irq_data *d = irq_get_irq_data(v->irq);

		if (!v->requested || !desc || !d || i == STUB_PLAIN)
			continue;
		if (v->index == STUB_CONTROL)
			hv_compose_msi_msg(d, &desc->msg);
		else
			stub_forget_mapping(v);
	}
	return 0;
}

/*
 * The "vmbus" supplier: a platform device linked to the PCI function, so that its noirq
 * callbacks run after the function's on the way down and before them (and so before the PCI
 * core's pci_restore_msi_state) on the way up, on S3, pm_test and every hibernation phase.
 */
static int vmbus_suspend_noirq(struct device *dev)
{
	return hv_pci_suspend(NULL);
}

static int vmbus_resume_noirq(struct device *dev)
{
	return hv_pci_resume(NULL);
}

static const struct dev_pm_ops vmbus_pm_ops = {
	.suspend_noirq = vmbus_suspend_noirq,
	.resume_noirq = vmbus_resume_noirq,
	.freeze_noirq = vmbus_suspend_noirq,
	.thaw_noirq = vmbus_resume_noirq,
	.poweroff_noirq = vmbus_suspend_noirq,
	.restore_noirq = vmbus_resume_noirq,
};

static int vmbus_probe(struct platform_device *pdev)
{
	return 0;
}

static struct platform_driver vmbus_driver = {
	.probe = vmbus_probe,
	.driver = {
		.name = STUB_NAME "_vmbus",
		.pm = &vmbus_pm_ops,
	},
};

/*
 * syscore callbacks run only when a sleep really reaches the platform (pm_test "core", real S3,
 * the hibernation snapshot), never at pm_test "platform": the counts let the harness check that
 * a scenario went as deep as it meant to.
 */
#ifdef HV_STUB_SYSCORE_STRUCT
static int stub_syscore_suspend(void *data)
{
	atomic_inc(&syscore_suspends);
	return 0;
}

static void stub_syscore_resume(void *data)
{
	atomic_inc(&syscore_resumes);
}

static const struct syscore_ops stub_syscore_ops = {
	.suspend = stub_syscore_suspend,
	.resume = stub_syscore_resume,
};

static struct syscore stub_syscore = {
	.ops = &stub_syscore_ops,
};

static void stub_register_syscore(void)
{
	register_syscore(&stub_syscore);
}

static void stub_unregister_syscore(void)
{
	unregister_syscore(&stub_syscore);
}
#else
static int stub_syscore_suspend(void)
{
	atomic_inc(&syscore_suspends);
	return 0;
}

static void stub_syscore_resume(void)
{
	atomic_inc(&syscore_resumes);
}

static struct syscore_ops stub_syscore_ops = {
	.suspend = stub_syscore_suspend,
	.resume = stub_syscore_resume,
};

static void stub_register_syscore(void)
{
	register_syscore_ops(&stub_syscore_ops);
}

static void stub_unregister_syscore(void)
{
	unregister_syscore_ops(&stub_syscore_ops);
}
#endif

static irqreturn_t stub_irq(int irq, void *arg)
{
	struct stub_vector *v = arg;

	atomic_inc(&v->handled);
	return IRQ_HANDLED;
}

/*
 * Programs the cause-to-vector routing. A reset (function reset, the reboot of a hibernation,
 * S3 under QEMU) clears it, so this runs at probe and after each of them.
 */
static void stub_hw_init(struct stub_dev *s)
{
	iowrite32(0xffffffff, s->bar0 + E1000_IMC);
	iowrite32(0xffffffff, s->bar0 + E1000_ICR);
	iowrite32(E1000_IVAR_MAP, s->bar0 + E1000_IVAR);
	iowrite32(GENMASK(E1000_CAUSE_BASE + STUB_NVEC - 1, E1000_CAUSE_BASE),
		  s->bar0 + E1000_IMS);
	ioread32(s->bar0 + E1000_STATUS);
}

static void stub_fire(struct stub_dev *s, unsigned int index)
{
	mutex_lock(&s->fire_lock);
	/* QEMU does not raise a cause again while it is still set in ICR: clear first. */
	iowrite32(0xffffffff, s->bar0 + E1000_ICR);
	iowrite32(BIT(E1000_CAUSE_BASE + index), s->bar0 + E1000_ICS);
	ioread32(s->bar0 + E1000_STATUS);
	atomic_inc(&s->vec[index].fired);
	mutex_unlock(&s->fire_lock);
}

/* Put the hv_* callbacks in front of the vector's chip, as pci-hyperv's MSI chip has them. */
static int stub_take_chip(struct stub_dev *s, struct stub_vector *v)
{
	struct irq_data *d = irq_get_irq_data(v->irq);
	struct irq_chip *orig, *copy = NULL;
	unsigned int i;

	if (!d || !d->chip || !d->chip->irq_mask || !d->chip->irq_unmask)
		return -ENODEV;
	orig = d->chip;
	/* 6.12's per-device MSI domains give every vector of the function the same chip. */
	for (i = 0; i < STUB_NVEC; i++) {
		if (s->vec[i].orig_chip == orig && s->vec[i].irq != v->irq) {
			copy = irq_get_irq_data(s->vec[i].irq)->chip;
			break;
		}
	}
	if (!copy) {
		copy = kmemdup(orig, sizeof(*orig), GFP_KERNEL);
		if (!copy)
			return -ENOMEM;
		copy->irq_mask = STUB_CHIP_MASK;
		copy->irq_unmask = STUB_CHIP_UNMASK;
		copy->irq_compose_msi_msg = hv_compose_msi_msg;
		/* What /proc/interrupts shows for pci-hyperv's vectors (hv_msi_irq_chip). */
		copy->name = "Hyper-V PCIe MSI";
		copy->irq_print_chip = NULL;
		s->chips[s->nchips++] = copy;
	}
	v->orig_chip = orig;
	v->orig_chip_data = d->chip_data;
	return irq_set_chip(v->irq, copy);
}

static void stub_give_back_chip(struct stub_vector *v)
{
	struct irq_data *d = irq_get_irq_data(v->irq);

	if (!v->orig_chip || !d)
		return;
	irq_set_chip(v->irq, v->orig_chip);
	d->chip_data = v->orig_chip_data;
	v->orig_chip = NULL;
}

static void stub_release_vectors(struct stub_dev *s)
{
	unsigned int i;

	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &s->vec[i];

		if (v->requested) {
			free_irq(v->irq, v);
			v->requested = false;
		}
		stub_give_back_chip(v);
	}
	for (i = 0; i < s->nchips; i++)
		kfree(s->chips[i]);
	s->nchips = 0;
}

static int stub_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct stub_dev *s;
	unsigned int i;
	int ret, n;

	if (stub)
		return -EBUSY;
	if (!cpu_online(test_cpu) || test_cpu == 0) {
		dev_err(&pdev->dev, "test_cpu %u must be an online CPU other than 0\n", test_cpu);
		return -EINVAL;
	}
	s = devm_kzalloc(&pdev->dev, sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->pdev = pdev;
	mutex_init(&s->fire_lock);
	ret = pci_enable_device_mem(pdev);
	if (ret)
		return ret;
	ret = pci_request_mem_regions(pdev, STUB_NAME);
	if (ret)
		goto err_disable;
	s->bar0 = pci_iomap(pdev, 0, 0);
	if (!s->bar0) {
		ret = -ENOMEM;
		goto err_regions;
	}
	/* MSI-X messages are memory writes by the device. */
	pci_set_master(pdev);

	n = pci_alloc_irq_vectors(pdev, STUB_NVEC, STUB_NVEC, PCI_IRQ_MSIX);
	if (n < 0) {
		ret = n;
		goto err_unmap;
	}

	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &s->vec[i];

		v->index = i;
		v->irq = pci_irq_vector(pdev, i);
		snprintf(v->name, sizeof(v->name), "%s-%s%u", STUB_NAME,
			 i == STUB_CONTROL ? "control" : i == STUB_PLAIN ? "plain" : "test", i);
	}
	stub = s;
	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &s->vec[i];

		if (i != STUB_PLAIN) {
			ret = stub_take_chip(s, v);
			if (ret)
				goto fail;
		}
		/*
		 * x86 reserves the vector at allocation and assigns it here, through
		 * irq_chip_compose_msi_msg(): the compose at setup goes through hv_compose_msi_msg,
		 * as it does on Hyper-V.
		 */
		ret = request_irq(v->irq, stub_irq, 0, v->name, v);
		if (ret)
			goto fail;
		v->requested = true;
		/* Masked in the device at once by disable_irq, not at its next interrupt. */
		if (i == STUB_PLAIN)
			irq_set_status_flags(v->irq, IRQ_DISABLE_UNLAZY);
		/*
		 * x86 applies this at the vector's next interrupt (masking and unmasking it
		 * through hv_irq_mask/hv_irq_unmask there), so the guest fires once after loading.
		 */
		ret = irq_set_affinity(v->irq,
				       cpumask_of(i == STUB_CONTROL || i == STUB_PLAIN ? 0 : test_cpu));
		if (ret)
			goto fail;
	}

	s->link = device_link_add(&pdev->dev, &vmbus_pdev->dev, DL_FLAG_STATELESS);
	if (!s->link) {
		ret = -EINVAL;
		goto fail;
	}
	pci_set_drvdata(pdev, s);
	stub_hw_init(s);
	dev_info(&pdev->dev, "mode=%s test_cpu=%u irqs=%u,%u,%u (control=%u, plain=%u)\n",
		 mode, test_cpu, s->vec[0].irq, s->vec[1].irq, s->vec[2].irq,
		 s->vec[STUB_CONTROL].irq, s->vec[STUB_PLAIN].irq);
	return 0;

fail:
	stub_release_vectors(s);
	stub = NULL;
	pci_free_irq_vectors(pdev);
err_unmap:
	pci_iounmap(pdev, s->bar0);
err_regions:
	pci_release_mem_regions(pdev);
err_disable:
	pci_disable_device(pdev);
	return ret;
}

static void stub_remove(struct pci_dev *pdev)
{
	struct stub_dev *s = pci_get_drvdata(pdev);

	if (!s)
		return;
	iowrite32(0xffffffff, s->bar0 + E1000_IMC);
	if (s->link)
		device_link_del(s->link);
	stub_release_vectors(s);
	pci_free_irq_vectors(pdev);
	stub = NULL;
	pci_iounmap(pdev, s->bar0);
	pci_release_mem_regions(pdev);
	pci_disable_device(pdev);
}

static int stub_pci_suspend(struct device *dev)
{
	struct stub_dev *s = dev_get_drvdata(dev);

	iowrite32(0xffffffff, s->bar0 + E1000_IMC);
	if (!s->plain_disabled) {
		disable_irq(s->vec[STUB_PLAIN].irq);
		s->plain_disabled = true;
	}
	return 0;
}

static int stub_pci_resume(struct device *dev)
{
	struct stub_dev *s = dev_get_drvdata(dev);

	stub_hw_init(s);
	if (s->plain_disabled) {
		enable_irq(s->vec[STUB_PLAIN].irq);
		s->plain_disabled = false;
	}
	return 0;
}

static const struct dev_pm_ops stub_pci_pm_ops = {
	.suspend = stub_pci_suspend,
	.resume = stub_pci_resume,
	.freeze = stub_pci_suspend,
	.thaw = stub_pci_resume,
	.poweroff = stub_pci_suspend,
	.restore = stub_pci_resume,
};

static void stub_reset_done(struct pci_dev *pdev)
{
	struct stub_dev *s = pci_get_drvdata(pdev);

	if (s)
		stub_hw_init(s);
}

static const struct pci_error_handlers stub_err_handlers = {
	.reset_done = stub_reset_done,
};

static const struct pci_device_id stub_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_INTEL, 0x10d3) },
	{ }
};
MODULE_DEVICE_TABLE(pci, stub_ids);

static struct pci_driver stub_pci_driver = {
	.name = STUB_NAME,
	.id_table = stub_ids,
	.probe = stub_probe,
	.remove = stub_remove,
	.err_handler = &stub_err_handlers,
	.driver = {
		.pm = &stub_pci_pm_ops,
	},
};

static ssize_t fire_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[8];
	unsigned int i;
	size_t n = min(len, sizeof(buf) - 1);

	if (!stub)
		return -ENODEV;
	if (copy_from_user(buf, ubuf, n))
		return -EFAULT;
	buf[n] = 0;
	strim(buf);
	if (!strcmp(buf, "all")) {
		for (i = 0; i < STUB_NVEC; i++)
			stub_fire(stub, i);
		return len;
	}
	if (kstrtouint(buf, 0, &i) || i >= STUB_NVEC)
		return -EINVAL;
	stub_fire(stub, i);
	return len;
}

static const struct file_operations fire_fops = {
	.owner = THIS_MODULE,
	.write = fire_write,
	.llseek = noop_llseek,
};

/*
 * vm-test's stream step marks each phase of its comparison for the instruction-counting QEMU
 * plugin on the host (tests/guest-insns), which recognises this movabs and reads the phase's
 * number from rdi: the guest has no other way to tell it when a tool's programs start.
 */
#define STUB_MARK_MAGIC 0x4b52414d54534e49ULL

static noinline void stub_mark(u64 mark)
{
	asm volatile("movabs %0, %%rax" : : "i"(STUB_MARK_MAGIC), "D"(mark) : "rax");
}

static ssize_t mark_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	u64 mark;
	int err = kstrtou64_from_user(ubuf, len, 0, &mark);

	if (err)
		return err;
	stub_mark(mark);
	return len;
}

static const struct file_operations mark_fops = {
	.owner = THIS_MODULE,
	.write = mark_write,
	.llseek = noop_llseek,
};

/*
 * Sets (mask) or clears a vector's MSI-X vector-control mask bit in the device table and in
 * the msi_desc cache, as pci_msix_write_vector_ctrl() does, but from outside genirq: its
 * IRQD_IRQ_MASKED stays what it was. With irqs off on this CPU, so that the vector's own
 * handler does not run in between here; genirq's mask/unmask on another CPU could still
 * interleave, which the step that uses this avoids by not moving or sleeping the vector.
 */
static int stub_set_stale_mask(unsigned int index, bool mask)
{
	struct stub_vector *v = &stub->vec[index];
	struct msi_desc *desc = irq_get_msi_desc(v->irq);
	struct irq_data *d = irq_get_irq_data(v->irq);
	void __iomem *ctrl_reg;
	unsigned long flags;
	u32 ctrl;

	if (!desc || !d || !STUB_MASK_BASE(desc))
		return -ENODEV;
	ctrl_reg = STUB_MASK_BASE(desc) + STUB_MSIX_INDEX(desc) * PCI_MSIX_ENTRY_SIZE +
		   PCI_MSIX_ENTRY_VECTOR_CTRL;
	local_irq_save(flags);
	/* Genirq masked it meanwhile: the mask is its own now, not ours to lift. */
	if (mask || !irqd_irq_masked(d)) {
		ctrl = STUB_MSIX_CTRL(desc);
		if (mask)
			ctrl |= PCI_MSIX_ENTRY_CTRL_MASKBIT;
		else
			ctrl &= ~PCI_MSIX_ENTRY_CTRL_MASKBIT;
		STUB_MSIX_CTRL(desc) = ctrl;
		writel(ctrl, ctrl_reg);
		readl(ctrl_reg);
	}
	local_irq_restore(flags);
	return 0;
}

static ssize_t stale_mask_write(struct file *f, const char __user *ubuf, size_t len,
				loff_t *ppos)
{
	char buf[8];
	unsigned int i;
	size_t n = min(len, sizeof(buf) - 1);
	int ret = 0;

	if (!stub)
		return -ENODEV;
	if (copy_from_user(buf, ubuf, n))
		return -EFAULT;
	buf[n] = 0;
	strim(buf);
	mutex_lock(&stale_lock);
	if (!strcmp(buf, "clear")) {
		if (stale_index >= 0)
			ret = stub_set_stale_mask(stale_index, false);
		if (!ret)
			stale_index = -1;
	} else if (kstrtouint(buf, 0, &i) || i >= STUB_NVEC || !stub->vec[i].requested) {
		ret = -EINVAL;
	} else {
		if (stale_index >= 0 && stale_index != (int)i)
			ret = stub_set_stale_mask(stale_index, false);
		if (!ret)
			ret = stub_set_stale_mask(i, true);
		if (!ret)
			stale_index = i;
	}
	mutex_unlock(&stale_lock);
	return ret ? ret : len;
}

static const struct file_operations stale_mask_fops = {
	.owner = THIS_MODULE,
	.write = stale_mask_write,
	.llseek = noop_llseek,
};

static int state_show(struct seq_file *m, void *unused)
{
	unsigned int i;

	seq_printf(m, "mode=%s bus=%s bus_suspends=%d bus_resumes=%d syscore_suspends=%d syscore_resumes=%d hv_unmasks_device=%d stale_mask=%d\n",
		   buggy ? "buggy" : opaque ? "opaque" : "fixed",
		   atomic_read(&bus_removing) ? "removing" : "installed",
		   atomic_read(&bus_suspends), atomic_read(&bus_resumes),
		   atomic_read(&syscore_suspends), atomic_read(&syscore_resumes),
		   STUB_HV_UNMASKS_DEVICE, stale_index);
	if (!stub)
		return 0;
	for (i = 0; i < STUB_NVEC; i++) {
		struct stub_vector *v = &stub->vec[i];
		struct irq_data *d = irq_get_irq_data(v->irq);
		struct msi_desc *desc = irq_get_msi_desc(v->irq);
		u32 table_ctrl = ~0u, table_addr = ~0u, table_data = ~0u;
		int cpu = -1;

		if (desc && STUB_MASK_BASE(desc)) {
			void __iomem *e = STUB_MASK_BASE(desc) + STUB_MSIX_INDEX(desc) * PCI_MSIX_ENTRY_SIZE;

			table_addr = readl(e + PCI_MSIX_ENTRY_LOWER_ADDR);
			table_data = readl(e + PCI_MSIX_ENTRY_DATA);
			table_ctrl = readl(e + PCI_MSIX_ENTRY_VECTOR_CTRL);
		}
		if (d)
			cpu = cpumask_first(irq_data_get_effective_affinity_mask(d));
		seq_printf(m,
			   "vector=%u irq=%u role=%s cpu=%d composes=%d masks=%d unmasks=%d retarget_failed=%d unmask_skipped=%d fired=%d handled=%d table_masked=%u cache_masked=%u genirq_masked=%u table_addr=0x%08x table_data=0x%08x irte_gen=%u\n",
			   i, v->irq,
			   i == STUB_CONTROL ? "control" : i == STUB_PLAIN ? "plain" : "test", cpu,
			   atomic_read(&v->composes), atomic_read(&v->masks),
			   atomic_read(&v->unmasks), atomic_read(&v->retarget_failed),
			   atomic_read(&v->unmask_skipped), atomic_read(&v->fired),
			   atomic_read(&v->handled),
			   table_ctrl == ~0u ? 2 : (table_ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT),
			   desc ? (STUB_MSIX_CTRL(desc) & PCI_MSIX_ENTRY_CTRL_MASKBIT) : 2,
			   d ? irqd_irq_masked(d) : 2, table_addr, table_data,
			   v->irte.generation);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(state);

static int __init stub_init(void)
{
	int ret;

	if (!strcmp(mode, "buggy"))
		buggy = true;
	else if (!strcmp(mode, "opaque"))
		opaque = true;
	else if (strcmp(mode, "fixed")) {
		pr_err(STUB_NAME ": mode must be fixed, buggy or opaque, not %s\n", mode);
		return -EINVAL;
	}
	ret = platform_driver_register(&vmbus_driver);
	if (ret)
		return ret;
	vmbus_pdev = platform_device_register_simple(STUB_NAME "_vmbus", -1, NULL, 0);
	if (IS_ERR(vmbus_pdev)) {
		ret = PTR_ERR(vmbus_pdev);
		goto err_driver;
	}
	stub_register_syscore();
	stub_debugfs = debugfs_create_dir(STUB_NAME, NULL);
	debugfs_create_file("fire", 0200, stub_debugfs, NULL, &fire_fops);
	debugfs_create_file("state", 0444, stub_debugfs, NULL, &state_fops);
	debugfs_create_file("stale_mask", 0200, stub_debugfs, NULL, &stale_mask_fops);
	debugfs_create_file("mark", 0200, stub_debugfs, NULL, &mark_fops);
	ret = pci_register_driver(&stub_pci_driver);
	if (ret)
		goto err_all;
	if (!stub) {
		pr_err(STUB_NAME ": no e1000e (8086:10d3) bound; is Linux's e1000e driver loaded?\n");
		pci_unregister_driver(&stub_pci_driver);
		ret = -ENODEV;
		goto err_all;
	}
	return 0;

err_all:
	debugfs_remove_recursive(stub_debugfs);
	stub_unregister_syscore();
	platform_device_unregister(vmbus_pdev);
err_driver:
	platform_driver_unregister(&vmbus_driver);
	return ret;
}

static void __exit stub_exit(void)
{
	pci_unregister_driver(&stub_pci_driver);
	debugfs_remove_recursive(stub_debugfs);
	stub_unregister_syscore();
	platform_device_unregister(vmbus_pdev);
	platform_driver_unregister(&vmbus_driver);
}

module_init(stub_init);
module_exit(stub_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Stand-in for pci-hyperv's MSI code on QEMU's e1000e, for msitrace's tests");
