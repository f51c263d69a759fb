//! The component supervisor and `component.*` actions: not built yet.

use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("the supervisor is not built yet")]
pub struct SupervisorError;

#[derive(Serialize)]
pub struct Nothing {}

pub struct Supervisor;

impl Supervisor {
    pub async fn start(
        _components: Vec<crate::config::ComponentSettings>,
        _trust: crate::config::TrustFiles,
        _work_dir: std::path::PathBuf,
    ) -> Result<Arc<Self>, SupervisorError> {
        Err(SupervisorError)
    }
    pub async fn status(&self, _c: Option<&str>) -> Result<Nothing, SupervisorError> {
        Err(SupervisorError)
    }
    pub async fn restart(&self, _c: &str, _w: bool) -> Result<Nothing, SupervisorError> {
        Err(SupervisorError)
    }
    pub async fn upgrade(&self, _c: &str, _v: &str) -> Result<Nothing, SupervisorError> {
        Err(SupervisorError)
    }
    pub async fn shutdown(&self) {}
}
