# Azure: a managed image (or a Compute Gallery image version) from the fixed VHD.
#
# Drives lockgate's own pipeline from Packer: `lockgate image build`, then
# `lockgate image publish azure`. Runs with Debian's packer 1.6.6 (no
# required_plugins, no packer init: the null builder and shell-local are built in).
#   CHECKPOINT_DISABLE=1 packer build -var version=1.2.3 -var resource_group=images -var location=westeurope -var storage_account=lockgateimages packer/azure.pkr.hcl
# The build needs root (mmdebstrap, chroot). Credentials come from the cloud SDK's
# own settings in the environment, never from a variable. docs/publish.md.

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
  default     = "vhd"
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

variable "manifest" {
  type        = string
  default     = ""
  description = "Publish this already-built image's manifest.json instead of building."
}

variable "lockgate" {
  type        = string
  default     = "lockgate"
  description = "The lockgate command (e.g. /opt/lockgate-build/.venv/bin/lockgate)."
}

variable "subscription" {
  type        = string
  default     = ""
  description = "Subscription id; empty: AZURE_SUBSCRIPTION_ID."
}

variable "resource_group" {
  type        = string
  default     = ""
  description = "Resource group of the image."
}

variable "location" {
  type        = string
  default     = ""
  description = "Azure region, e.g. westeurope."
}

variable "storage_account" {
  type        = string
  default     = ""
  description = "Storage account the VHD is uploaded to as a page blob."
}

variable "gallery" {
  type        = string
  default     = ""
  description = "Azure Compute Gallery; empty: a managed image."
}

variable "gallery_image" {
  type        = string
  default     = ""
  description = "Image definition in the gallery."
}

variable "name" {
  type        = string
  default     = ""
  description = "Image name; empty: <name>-<version>-<manifest sha256 prefix>."
}

variable "dry_run" {
  type        = bool
  default     = false
  description = "Print the API calls and make none."
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
      "LOCKGATE_MANIFEST=${var.manifest}",
    ]
    command = "${path.root}/scripts/build.sh"
  }

  provisioner "shell-local" {
    environment_vars = [
      "LOCKGATE=${var.lockgate}",
      "LOCKGATE_VERSION=${var.version}",
      "LOCKGATE_FORMATS=${var.formats}",
      "LOCKGATE_FIRMWARE=${var.firmware}",
      "LOCKGATE_PROFILE=${var.profile}",
      "LOCKGATE_OUT=${var.out}",
      "LOCKGATE_CACHE_DIR=${var.cache_dir}",
      "LOCKGATE_MANIFEST=${var.manifest}",
      "LOCKGATE_SUBSCRIPTION=${var.subscription}",
      "LOCKGATE_RESOURCE_GROUP=${var.resource_group}",
      "LOCKGATE_LOCATION=${var.location}",
      "LOCKGATE_STORAGE_ACCOUNT=${var.storage_account}",
      "LOCKGATE_GALLERY=${var.gallery}",
      "LOCKGATE_GALLERY_IMAGE=${var.gallery_image}",
      "LOCKGATE_NAME=${var.name}",
      "LOCKGATE_DRY_RUN=${var.dry_run}",
    ]
    command = "${path.root}/scripts/publish.sh azure"
  }
}
