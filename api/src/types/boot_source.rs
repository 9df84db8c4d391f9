//! `PUT /boot-source`.

use serde::{Deserialize, Serialize};

/// The kernel, initrd and command line to boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Host path of the kernel image (ELF vmlinux or bzImage).
    pub kernel_image_path: String,
    /// Host path of the initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel command line; the VMM's default is used when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}
