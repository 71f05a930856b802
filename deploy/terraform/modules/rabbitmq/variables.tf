variable "name" {
  description = "Name of the RabbitmqCluster (its Service is <name>.<namespace>.svc)."
  type        = string
  default     = "taskq-rabbitmq"
}

variable "namespace" {
  description = "Namespace of the broker, taskq's own by default."
  type        = string
}

variable "replicas" {
  description = "Broker nodes: 3 for quorum queues that survive the loss of a node, 1 for a trial."
  type        = number
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.replicas)
    error_message = "replicas must be 1, 3 or 5 (an odd number keeps a quorum)."
  }
}

variable "storage" {
  description = "Persistent volume size of each node (messages, and the queues' indexes)."
  type        = string
  default     = "50Gi"
}

variable "storage_class" {
  description = "Storage class of the nodes' volumes (null: the cluster's default)."
  type        = string
  default     = null
}

variable "cpu" {
  description = "CPU request and limit of each node."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory request and limit of each node (RabbitMQ blocks publishers at 40% of it by default)."
  type        = string
  default     = "4Gi"
}

variable "external" {
  description = "An existing broker (e.g. CloudAMQP) to use instead: its AMQP and management API URLs with credentials. null: run one in the cluster."
  type = object({
    amqp_url       = string
    management_url = string
  })
  default   = null
  sensitive = true
}
