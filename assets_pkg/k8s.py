"""Kubernetes settings of steps, read by dagster-k8s's executor (deploy/helm); inert under other executors."""

# The embedding step's pod: one NVIDIA GPU, on a node that has one.
GPU_POD = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "4", "memory": "16Gi"}}},
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
