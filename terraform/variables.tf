variable "aws_region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "project_name" {
  description = "Name prefix of every resource (lowercase letters, digits and hyphens)."
  type        = string
  default     = "health-predict"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.project_name))
    error_message = "project_name must be 3-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "allowed_cidr" {
  description = "The only IPv4 network (CIDR) allowed to reach SSH, the Airflow UI, the MLflow UI and the API NodePort, e.g. your public IP as x.y.z.w/32."
  type        = string

  validation {
    condition     = can(cidrhost(var.allowed_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.allowed_cidr))
    error_message = "allowed_cidr must be an IPv4 CIDR block such as 203.0.113.7/32."
  }

  validation {
    condition     = can(regex("/([0-9]+)$", var.allowed_cidr)) && try(tonumber(regex("/([0-9]+)$", var.allowed_cidr)[0]) >= 8, false)
    error_message = "allowed_cidr must not open the host to the whole internet (0.0.0.0/0 or any prefix shorter than /8)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key (the contents of e.g. ~/.ssh/id_ed25519.pub) installed for the ubuntu user."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa)."
  }
}

variable "project_repository_url" {
  description = "HTTPS URL of the Health Predict git repository the host clones."
  type        = string

  validation {
    condition     = can(regex("^https://", var.project_repository_url))
    error_message = "project_repository_url must be an https:// URL (the host only has HTTPS egress)."
  }
}

variable "project_git_ref" {
  description = "Branch or tag of the repository to check out on the host."
  type        = string
  default     = "main"
}

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the VPC."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be an IPv4 CIDR block."
  }
}

variable "public_subnet_cidr" {
  description = "IPv4 CIDR block of the public subnet; must lie inside vpc_cidr."
  type        = string
  default     = "10.42.1.0/24"

  validation {
    condition     = can(cidrhost(var.public_subnet_cidr, 0))
    error_message = "public_subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "availability_zone" {
  description = "Availability zone of the subnet and host; empty means zone a of aws_region."
  type        = string
  default     = ""
}

variable "instance_type" {
  description = "EC2 instance type. m7i-flex.large (2 vCPU, 8 GiB) is free-tier eligible on AWS Free plan accounts and is the smallest size that holds Postgres, MLflow, Airflow and a kind cluster."
  type        = string
  default     = "m7i-flex.large"
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter holding the AMI id (Ubuntu 24.04 LTS, x86_64, gp3); use the arm64 one for Graviton instance types."
  type        = string
  default     = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB (the OS and the project checkout; nothing stateful)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gb >= 20 && var.root_volume_size_gb <= 500
    error_message = "root_volume_size_gb must be between 20 and 500."
  }
}

variable "data_volume_size_gb" {
  description = "Size of the encrypted gp3 data volume in GiB: Docker's data root (Postgres with the MLflow registry and Airflow metadata, images, the kind node) and the stack's .env."
  type        = number
  default     = 40

  validation {
    condition     = var.data_volume_size_gb >= 20 && var.data_volume_size_gb <= 1000
    error_message = "data_volume_size_gb must be between 20 and 1000."
  }
}

variable "data_volume_snapshot_id" {
  description = "Snapshot to create the data volume from (restore); empty creates an empty volume. Changing it replaces the volume, after a final snapshot of the current one."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(snap-[0-9a-f]{8,17})?$", var.data_volume_snapshot_id))
    error_message = "data_volume_snapshot_id must be empty or a snapshot id such as snap-0123456789abcdef0."
  }
}

variable "data_snapshot_time_utc" {
  description = "Time of day (UTC, HH:MM) of the daily data volume snapshot."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.data_snapshot_time_utc))
    error_message = "data_snapshot_time_utc must be a time such as 03:00."
  }
}

variable "data_snapshots_to_keep" {
  description = "Number of daily data volume snapshots kept; older ones are deleted."
  type        = number
  default     = 14

  validation {
    condition     = var.data_snapshots_to_keep >= 1 && var.data_snapshots_to_keep <= 1000
    error_message = "data_snapshots_to_keep must be between 1 and 1000."
  }
}

variable "airflow_port" {
  description = "Host port of the Airflow UI and REST API."
  type        = number
  default     = 8080
}

variable "mlflow_port" {
  description = "Host port of the MLflow tracking server and UI."
  type        = number
  default     = 5000
}

variable "api_node_port" {
  description = "Kubernetes NodePort of the model API Service, mapped to the same host port by kind."
  type        = number
  default     = 30080

  validation {
    condition     = var.api_node_port >= 30000 && var.api_node_port <= 32767
    error_message = "api_node_port must lie in the Kubernetes NodePort range 30000-32767."
  }
}

variable "kind_version" {
  description = "kind release installed on the host (its checksum is verified)."
  type        = string
  default     = "0.29.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.kind_version))
    error_message = "kind_version must look like 0.29.0 (no leading v)."
  }
}

variable "kubernetes_minor_version" {
  description = "Kubernetes minor version of the kubectl apt repository (pkgs.k8s.io), e.g. 1.33."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_minor_version))
    error_message = "kubernetes_minor_version must look like 1.33."
  }
}

variable "ecr_repository_name" {
  description = "Name of the ECR repository for the model API image (the deploy step's ecr_repository)."
  type        = string
  default     = "health-predict"
}

variable "ecr_images_to_keep" {
  description = "Number of most recent images the ECR lifecycle policy keeps."
  type        = number
  default     = 10

  validation {
    condition     = var.ecr_images_to_keep >= 2
    error_message = "Keep at least 2 images so that a rollback has an image to go back to."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten or deleted S3 object version is kept before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket and ECR repository (data loss; for throwaway environments)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags applied to every resource."
  type        = map(string)
  default     = {}
}
