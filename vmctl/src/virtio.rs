//! Attaches the `--disk`, `--net` and `--vsock` virtio-mmio devices to a VM being built.

use anyhow::Context;
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::net::{Net, NetConfig};
use devices::virtio::spec::check_devices;
use devices::virtio::vsock::{Vsock, VsockConfig};
use devices::virtio::VirtioMmioDevice;
use vmm::VmBuilder;

/// The virtio devices of `vmctl run`, in slot order: disks (the first is /dev/vda), NICs
/// (eth0, ...), then vsock.
pub struct VirtioDevices {
    pub disks: Vec<BlockConfig>,
    pub nets: Vec<NetConfig>,
    pub vsock: Option<VsockConfig>,
}

/// Validates the set (duplicate ids, images, TAPs), opens every backend and attaches it.
pub fn attach(b: &mut VmBuilder, mut d: VirtioDevices) -> anyhow::Result<()> {
    check_devices(&mut d.disks, &d.nets, d.vsock.as_slice())?;
    for cfg in d.disks {
        let (path, ro) = (cfg.path.clone(), cfg.read_only);
        let dev = VirtioMmioDevice::new(b.guest_memory().clone(), Block::new(cfg)?)?;
        let slot = add(b, dev)?;
        tracing::info!(
            ?path,
            read_only = ro,
            "virtio-blk at {:#x} irq {}",
            slot.0,
            slot.1
        );
    }
    for cfg in d.nets {
        let tap = cfg.tap_name.clone();
        let dev = VirtioMmioDevice::new(b.guest_memory().clone(), Net::new(cfg)?)?;
        let slot = add(b, dev)?;
        tracing::info!(tap, "virtio-net at {:#x} irq {}", slot.0, slot.1);
    }
    if let Some(cfg) = d.vsock {
        let (cid, uds) = (cfg.guest_cid, cfg.uds_path.clone());
        let dev = VirtioMmioDevice::new(b.guest_memory().clone(), Vsock::new(cfg)?)?;
        let slot = add(b, dev)?;
        tracing::info!(cid, ?uds, "virtio-vsock at {:#x} irq {}", slot.0, slot.1);
    }
    Ok(())
}

fn add(b: &mut VmBuilder, dev: VirtioMmioDevice) -> anyhow::Result<(u64, u32)> {
    let slot = b
        .add_mmio_device(
            dev.transport.clone(),
            dev.ioevents()?,
            dev.interrupt_evt().try_clone()?,
        )
        .context("attaching a virtio-mmio device")?;
    b.add_subscriber(dev.subscriber.clone());
    Ok((slot.base, slot.irq))
}
