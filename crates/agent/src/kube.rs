//! Kubernetes API actions (`kube.nodes`, `kube.cordon`, `kube.uncordon`): not built yet.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("Kubernetes actions are not built yet")]
pub struct KubeError;

pub struct Impersonation {
    pub pseudonym: palisade_core::OperatorId,
    pub event_id: palisade_core::EventId,
    pub log_entry: String,
}

#[derive(Serialize)]
pub struct NodesOutput {}

pub struct KubeClient;

impl KubeClient {
    pub fn new(_settings: &crate::config::KubeSettings) -> Result<Self, KubeError> {
        Err(KubeError)
    }
    pub async fn nodes(&self, _who: &Impersonation) -> Result<NodesOutput, KubeError> {
        Err(KubeError)
    }
    pub async fn set_unschedulable(
        &self,
        _who: &Impersonation,
        _node: &str,
        _unschedulable: bool,
    ) -> Result<NodesOutput, KubeError> {
        Err(KubeError)
    }
}
