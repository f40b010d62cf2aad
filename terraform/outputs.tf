output "instance_id" {
  description = "EC2 instance id of the host."
  value       = aws_instance.host.id
}

output "public_ip" {
  description = "Public IPv4 address of the host."
  value       = aws_instance.host.public_ip
}

output "public_dns" {
  description = "Public DNS name of the host."
  value       = aws_instance.host.public_dns
}

output "bucket_name" {
  description = "Name of the project S3 bucket (data store and MLflow artifacts)."
  value       = aws_s3_bucket.project.bucket
}

output "data_uri" {
  description = "HEALTH_PREDICT_DATA_URI for the pipeline: the data store inside the project bucket."
  value       = "s3://${aws_s3_bucket.project.bucket}/data"
}

output "ecr_repository_url" {
  description = "URI of the ECR repository for the model API image."
  value       = aws_ecr_repository.api.repository_url
}

output "mlflow_url" {
  description = "MLflow UI and tracking URI, TLS through nginx (reachable from allowed_cidr)."
  value       = "https://${aws_instance.host.public_dns}:${var.mlflow_port}"
}

output "airflow_url" {
  description = "Airflow UI, TLS through nginx (reachable from allowed_cidr)."
  value       = "https://${aws_instance.host.public_dns}:${var.airflow_port}"
}

output "api_url" {
  description = "Model API base URL, TLS through nginx with a bearer token (reachable from allowed_cidr)."
  value       = "https://${aws_instance.host.public_dns}:${var.api_node_port}"
}

output "ssh_command" {
  description = "SSH command for the host (use the private key matching ssh_public_key)."
  value       = "ssh ubuntu@${aws_instance.host.public_dns}"
}

output "ssh_tunnel_command" {
  description = "SSH tunnel that exposes the Airflow UI, MLflow UI and API on localhost without opening their ports."
  value       = "ssh -N -L ${var.airflow_port}:localhost:${var.airflow_port} -L ${var.mlflow_port}:localhost:${var.mlflow_port} -L ${var.api_node_port}:localhost:${var.api_node_port} ubuntu@${aws_instance.host.public_dns}"
}

output "data_volume_id" {
  description = "EBS volume holding the stack's state (Docker data root and .env); snapshotted daily."
  value       = aws_ebs_volume.data.id
}
