//! Kubernetes API actions (`kube.nodes`, `kube.cordon`, `kube.uncordon`): not built yet.
