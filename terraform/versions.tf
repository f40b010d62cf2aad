terraform {
  # 1.9 is the first release whose variable validations may reference other values.
  required_version = "~> 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.50"
    }
  }
}
