//! Task states by their Mesos names, and what they mean.

use meseta_proto::v1::TaskState;

/// Facts about a [`TaskState`] that every role needs.
pub trait TaskStateExt {
    /// The task will never run again in this state (Mesos' "terminal").
    fn is_terminal(&self) -> bool;
    /// Mesos' name, e.g. `TASK_RUNNING`.
    fn mesos_name(&self) -> &'static str;
}

impl TaskStateExt for TaskState {
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskError
                | TaskState::TaskLost
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskGoneByOperator
        )
    }

    fn mesos_name(&self) -> &'static str {
        self.as_str_name()
    }
}

/// A state from its Mesos name (`TASK_RUNNING`).
pub fn parse_task_state(name: &str) -> Option<TaskState> {
    TaskState::from_str_name(name)
}

/// The state carried in an `i32` protobuf field, TASK_UNKNOWN when unknown.
pub fn task_state_of(raw: i32) -> TaskState {
    TaskState::try_from(raw).unwrap_or(TaskState::TaskUnknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states() {
        assert!(TaskState::TaskFinished.is_terminal());
        assert!(TaskState::TaskKilled.is_terminal());
        assert!(!TaskState::TaskRunning.is_terminal());
        assert!(!TaskState::TaskUnreachable.is_terminal());
        assert_eq!(TaskState::TaskRunning.mesos_name(), "TASK_RUNNING");
        assert_eq!(parse_task_state("TASK_FAILED"), Some(TaskState::TaskFailed));
        assert_eq!(task_state_of(999), TaskState::TaskUnknown);
    }
}
