# AWS: an AMI from the raw disk via the EBS direct APIs (or S3 + ImportSnapshot).
#
# Drives lockgate's own pipeline from Packer: `lockgate image build`, then
# `lockgate image publish aws`. Runs with Debian's packer 1.6.6 (no
# required_plugins, no packer init: the null builder and shell-local are built in).
#   CHECKPOINT_DISABLE=1 packer build -var version=1.2.3 -var region=eu-west-1 packer/aws.pkr.hcl
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

variable "region" {
  type        = string
  default     = ""
  description = "AWS region; empty: boto3's (AWS_REGION, the profile)."
}

variable "name" {
  type        = string
  default     = ""
  description = "AMI name; empty: <name>-<version>-<manifest sha256 prefix>."
}

variable "via_s3" {
  type        = bool
  default     = false
  description = "Upload the VMDK to S3 and ImportSnapshot (add vmdk to formats)."
}

variable "bucket" {
  type        = string
  default     = ""
  description = "S3 bucket for via_s3."
}

variable "copy_to_regions" {
  type        = string
  default     = ""
  description = "Comma-separated regions to copy the AMI to."
}

variable "share_with" {
  type        = string
  default     = ""
  description = "Comma-separated AWS account ids given launch permission."
}

variable "public" {
  type        = bool
  default     = false
  description = "Make the AMI public."
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
      "LOCKGATE_REGION=${var.region}",
      "LOCKGATE_NAME=${var.name}",
      "LOCKGATE_VIA_S3=${var.via_s3}",
      "LOCKGATE_BUCKET=${var.bucket}",
      "LOCKGATE_COPY_TO_REGIONS=${var.copy_to_regions}",
      "LOCKGATE_SHARE_WITH=${var.share_with}",
      "LOCKGATE_PUBLIC=${var.public}",
      "LOCKGATE_DRY_RUN=${var.dry_run}",
    ]
    command = "${path.root}/scripts/publish.sh aws"
  }
}
