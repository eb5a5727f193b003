# Local: build the image (raw by default; formats=all for every cloud's file)
# and publish nothing: the artifacts and manifest.json stay in `out`, ready for
# `lockgate image boot` or a later publish. The same run as `lockgate image build`:
#   CHECKPOINT_DISABLE=1 packer build -var version=1.2.3 packer/local.pkr.hcl
# The build needs root (mmdebstrap, chroot); a warm cache_dir makes it fast.

packer {
  required_version = ">= 1.6.0"
}

variable "version" {
  type        = string
  default     = ""
  description = "Appliance version (GRUB entry lockgate-<version>); empty: lockgate's own."
}

variable "formats" {
  type        = string
  default     = "raw"
  description = "lockgate image build --formats (raw is always made)."
}

variable "firmware" {
  type        = string
  default     = ""
  description = "bios, uefi or hybrid; empty: the profile's (hybrid)."
}

variable "profile" {
  type        = string
  default     = ""
  description = "Image profile (YAML); empty: image/profiles/appliance.yaml."
}

variable "out" {
  type        = string
  default     = "build"
  description = "Where the artifacts and manifest.json go."
}

variable "cache_dir" {
  type        = string
  default     = "cache"
  description = "The build's cache (package layer, wheels): a warm cache makes a rebuild fast."
}

variable "lockgate" {
  type        = string
  default     = "lockgate"
  description = "The lockgate command (e.g. /opt/lockgate-build/.venv/bin/lockgate)."
}

source "null" "lockgate" {
  communicator = "none"
}

build {
  sources = ["source.null.lockgate"]

  provisioner "shell-local" {
    environment_vars = [
      "LOCKGATE=${var.lockgate}",
      "LOCKGATE_VERSION=${var.version}",
      "LOCKGATE_FORMATS=${var.formats}",
      "LOCKGATE_FIRMWARE=${var.firmware}",
      "LOCKGATE_PROFILE=${var.profile}",
      "LOCKGATE_OUT=${var.out}",
      "LOCKGATE_CACHE_DIR=${var.cache_dir}",
    ]
    command = "${path.root}/scripts/build.sh"
  }

  provisioner "shell-local" {
    inline = ["echo \"packer: built $(ls ${var.out})\""]
  }
}
