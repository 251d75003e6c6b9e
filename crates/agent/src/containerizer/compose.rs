//! Mesos' composing containerizer: the native one (linux or posix) and,
//! when the agent runs one, the Docker one, behind one [`Containerizer`].
//! A launch goes to Docker when its spec is a Docker task; every later call
//! goes to whichever holds the container.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{
    ContainerInfo, Containerizer, ContainerizerError, LaunchSpec, Launched, RecoverSpec, Usage,
};

/// See the module documentation.
pub struct ComposingContainerizer {
    native: Arc<dyn Containerizer>,
    docker: Option<Arc<dyn Containerizer>>,
    /// Container id → it is a Docker container.
    owners: Arc<Mutex<HashMap<String, bool>>>,
}

impl ComposingContainerizer {
    pub fn new(native: Arc<dyn Containerizer>, docker: Option<Arc<dyn Containerizer>>) -> Self {
        ComposingContainerizer {
            native,
            docker,
            owners: Arc::default(),
        }
    }

    /// Whether Docker tasks can run here.
    pub fn has_docker(&self) -> bool {
        self.docker.is_some()
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<String, bool>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self, docker: bool) -> Result<Arc<dyn Containerizer>, ContainerizerError> {
        if docker {
            self.docker.clone().ok_or(ContainerizerError::NoDocker)
        } else {
            Ok(self.native.clone())
        }
    }

    fn owner(&self, container_id: &str) -> Result<Arc<dyn Containerizer>, ContainerizerError> {
        let docker = self.owners().get(container_id).copied().unwrap_or(false);
        self.pick(docker)
    }

    /// Runs `start` on the containerizer for `docker` and remembers which
    /// one holds the container when it succeeds.
    fn start(
        &self,
        container_id: String,
        docker: bool,
        start: impl FnOnce(
            &Arc<dyn Containerizer>,
        ) -> BoxFuture<'static, Result<Launched, ContainerizerError>>,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let picked = self.pick(docker);
        let owners = self.owners.clone();
        let started = picked.map(|c| start(&c));
        async move {
            let launched = started?.await?;
            owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(container_id, docker);
            Ok(launched)
        }
        .boxed()
    }
}

impl Containerizer for ComposingContainerizer {
    fn name(&self) -> &'static str {
        self.native.name()
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let (id, docker) = (spec.container_id.clone(), spec.docker.is_some());
        self.start(id, docker, move |c| c.launch(spec))
    }

    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        match self.owner(container_id) {
            Ok(c) => c.kill(container_id, grace),
            Err(e) => async move { Err(e) }.boxed(),
        }
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let owners = self.owners.clone();
        let id = container_id.to_string();
        let destroyed = self.owner(container_id).map(|c| c.destroy(container_id));
        async move {
            destroyed?.await?;
            owners.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            Ok(())
        }
        .boxed()
    }

    fn containers(&self) -> Vec<ContainerInfo> {
        let mut all = self.native.containers();
        if let Some(docker) = &self.docker {
            all.extend(docker.containers());
        }
        all
    }

    fn recover(
        &self,
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let (id, docker) = (spec.container_id.clone(), spec.docker);
        self.start(id, docker, move |c| c.recover(spec))
    }

    fn remove_orphans(&self, known: &HashSet<String>) -> BoxFuture<'static, Vec<String>> {
        let native = self.native.remove_orphans(known);
        let docker = self.docker.as_ref().map(|d| d.remove_orphans(known));
        async move {
            let mut removed = native.await;
            if let Some(docker) = docker {
                removed.extend(docker.await);
            }
            removed
        }
        .boxed()
    }

    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>> {
        match self.owner(container_id) {
            Ok(c) => c.usage(container_id),
            Err(e) => async move { Err(e) }.boxed(),
        }
    }
}
