//! The QEMU rig.
#[derive(clap::Args)]
pub struct VmTestArgs {}
#[derive(clap::Args)]
pub struct DemoArgs {}
pub fn vm_test(_: VmTestArgs) -> anyhow::Result<()> { anyhow::bail!("vm-test: not built yet") }
pub fn demo(_: DemoArgs) -> anyhow::Result<()> { anyhow::bail!("demo: not built yet") }
