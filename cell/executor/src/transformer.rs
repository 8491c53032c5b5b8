//! Builds the step tree from an action tree (Diego's `depot/transformer`): validates the tree,
//! resolves each action's log source (an action's `log_source` overrides its parent's for its
//! whole subtree) and turns every action into exactly one [`Step`].

use std::time::Duration;

use diego_model::Action;
use diego_model::actions::MAX_ACTION_DEPTH;
use diego_model::validate::Problems;

use crate::error::StepError;
use crate::logs::Emitter;
use crate::steps::Step;

/// Validates `action` (as the BBS does, plus the depth again) and builds its steps.
pub(crate) fn build(action: &Action, emitter: &Emitter) -> Result<Step, StepError> {
    // the BBS validated the tree before storing it; a tree that came another way is
    // checked again, and its depth is checked before any recursion below
    check_depth(action)?;
    let mut problems = Problems::new();
    action.validate_into("action", &mut problems);
    problems
        .into_request_result()
        .map_err(|e| StepError::Invalid(e.message))?;
    Ok(step(action, emitter))
}

/// Depth check without recursion, so an absurdly deep tree cannot overflow the stack here.
fn check_depth(action: &Action) -> Result<(), StepError> {
    let mut stack = vec![(action, 1usize)];
    while let Some((a, depth)) = stack.pop() {
        if depth > MAX_ACTION_DEPTH {
            return Err(StepError::Invalid(format!(
                "actions nest deeper than {MAX_ACTION_DEPTH}"
            )));
        }
        stack.extend(a.children().into_iter().map(|c| (c, depth + 1)));
    }
    Ok(())
}

fn step(action: &Action, parent: &Emitter) -> Step {
    match action {
        Action::Run(a) => Step::Run {
            emitter: parent.with_source(&a.log_source),
            action: a.clone(),
        },
        Action::Download(a) => Step::Download {
            emitter: parent.with_source(&a.log_source),
            action: a.clone(),
        },
        Action::Upload(a) => Step::Upload {
            emitter: parent.with_source(&a.log_source),
            action: a.clone(),
        },
        Action::Timeout(a) => {
            let emitter = parent.with_source(&a.log_source);
            let ms = u64::try_from(a.effective_timeout_ms()).unwrap_or(0);
            Step::Timeout {
                inner: Box::new(step(&a.action, &emitter)),
                timeout: Duration::from_millis(ms),
            }
        }
        Action::EmitProgress(a) => {
            let emitter = parent.with_source(&a.log_source);
            Step::EmitProgress {
                inner: Box::new(step(&a.action, &emitter)),
                start: a.start_message.clone(),
                success: a.success_message.clone(),
                failure_prefix: a.failure_message_prefix.clone(),
                emitter,
            }
        }
        Action::Try(a) => {
            let emitter = parent.with_source(&a.log_source);
            Step::Try {
                inner: Box::new(step(&a.action, &emitter)),
            }
        }
        Action::Parallel(a) => {
            let emitter = parent.with_source(&a.log_source);
            Step::Parallel(a.actions.iter().map(|c| step(c, &emitter)).collect())
        }
        Action::Serial(a) => {
            let emitter = parent.with_source(&a.log_source);
            Step::Serial(a.actions.iter().map(|c| step(c, &emitter)).collect())
        }
        Action::Codependent(a) => {
            let emitter = parent.with_source(&a.log_source);
            Step::Codependent(
                a.actions
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("action {i} ({})", describe(c)), step(c, &emitter)))
                    .collect(),
            )
        }
    }
}

/// A short name for an action, used to say which codependent action exited.
pub(crate) fn describe(action: &Action) -> String {
    match action {
        Action::Run(a) => format!("run {}", a.path),
        Action::Download(a) if !a.artifact.is_empty() => format!("download {}", a.artifact),
        Action::Download(a) => format!("download to {}", a.to),
        Action::Upload(a) if !a.artifact.is_empty() => format!("upload {}", a.artifact),
        Action::Upload(a) => format!("upload of {}", a.from),
        Action::Timeout(a) => format!("timeout of {}", describe(&a.action)),
        Action::EmitProgress(a) => describe(&a.action),
        Action::Try(a) => format!("try of {}", describe(&a.action)),
        Action::Parallel(_) => "parallel".into(),
        Action::Serial(_) => "serial".into(),
        Action::Codependent(_) => "codependent".into(),
    }
}

#[cfg(test)]
mod tests {
    use diego_model::actions::{SerialAction, TryAction};

    use super::*;
    use crate::logs::LogHub;

    fn emitter() -> Emitter {
        Emitter {
            hub: LogHub::new(8),
            log_guid: "g".into(),
            source_type: "APP".into(),
            instance: "0".into(),
        }
    }

    #[test]
    fn log_sources_override_for_the_subtree() {
        let action: Action = serde_json::from_str(
            r#"{"serial":{"log_source":"STG","actions":[
                {"run":{"path":"a"}},
                {"try":{"action":{"run":{"path":"b","log_source":"X"}}}}]}}"#,
        )
        .unwrap();
        let Step::Serial(steps) = build(&action, &emitter()).unwrap() else {
            panic!("not serial")
        };
        let sources: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Run { emitter, .. } => emitter.source_type.clone(),
                Step::Try { inner } => match &**inner {
                    Step::Run { emitter, .. } => emitter.source_type.clone(),
                    _ => panic!(),
                },
                _ => panic!(),
            })
            .collect();
        assert_eq!(sources, vec!["STG".to_string(), "X".into()]);
    }

    #[test]
    fn invalid_and_too_deep_trees_are_refused() {
        let bad = Action::Serial(SerialAction::default());
        let err = build(&bad, &emitter()).unwrap_err();
        assert!(err.to_string().contains("may not be empty"), "{err}");

        let mut deep = Action::run("x", &[]);
        for _ in 0..10_000 {
            deep = Action::Try(TryAction {
                action: Box::new(deep),
                log_source: String::new(),
            });
        }
        let err = build(&deep, &emitter()).unwrap_err();
        assert!(err.to_string().contains("deeper than"), "{err}");
        // dropping a 10k-deep Box chain recurses too; leak it rather than test Drop's stack
        std::mem::forget(deep);
    }
}
