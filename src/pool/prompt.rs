//! What `vine pool` tells a Claude session: a task handed over (its instructions inline, as
//! the Stop hook gives them), and the answer to the question a parked session asked. The
//! worker and task ids are in the session's environment (`VINE_WORKER`, `VINE_TASK`), so the
//! commands it is told to run need none.

use crate::message::Message;
use crate::reply::ClaimedTask;
use crate::rules::one_line;

/// The prompt of a run that works on the task `c` just claimed.
pub fn hand_over(c: &ClaimedTask) -> String {
    let mut s = format!(
        "You are an agentvine worker. {}",
        crate::hook::task_brief(c)
    );
    s.push_str(
        "\nWhen done run `vine complete --result \"<what you did>\"`. \
         If it cannot be done run `vine fail --error \"<why>\"`. \
         If you need a decision from a person, run `vine ask \"<question>\"` and end your turn: \
         this session is resumed with the answer.",
    );
    s
}

/// The prompt of a run that resumes a parked session with the answer to its question.
pub fn answered(question: &Message, answer: &Message) -> String {
    format!(
        "The answer to your question #{seq} (\"{q}\") from {who}:\n\n{a}\n\n\
         Go on with the task. When done run `vine complete --result \"<what you did>\"`; \
         if it cannot be done run `vine fail --error \"<why>\"`.",
        seq = question.seq.unwrap_or(0),
        q = one_line(&question.message),
        who = answer.agent,
        a = answer.message.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageKind;
    use crate::task::Task;

    #[test]
    fn the_hand_over_carries_the_instructions_and_commands_without_ids() {
        let mut t = Task::new(7, "Write hello.txt\nsecond line", crate::time::now());
        t.instruction_file = Some("tasks/task-7-instructions.md".into());
        t.context_files = vec!["docs/a.md".into()];
        let c = ClaimedTask {
            task: t,
            instructions: Some("Say hello.\n".into()),
            instructions_error: None,
        };
        let p = hand_over(&c);
        assert!(
            p.contains("Task 7 is claimed for you: Write hello.txt second line."),
            "{p}"
        );
        assert!(
            p.contains("Instructions (tasks/task-7-instructions.md):\nSay hello.\n"),
            "{p}"
        );
        assert!(p.contains("docs/a.md"), "{p}");
        assert!(p.contains("`vine complete --result"), "{p}");
        assert!(
            p.contains("`vine ask \"<question>\"` and end your turn"),
            "{p}"
        );
        assert!(!p.contains("--wait"), "{p}");
    }

    #[test]
    fn the_answer_prompt_names_the_question_and_the_answerer() {
        let now = crate::time::now();
        let mut q = Message::new(MessageKind::Question, "w1", "Which database?", now);
        q.seq = Some(4);
        let a = Message::new(MessageKind::Answer, "alice", "PostgreSQL.", now);
        let p = answered(&q, &a);
        assert!(p.starts_with("The answer to your question #4 (\"Which database?\") from alice:"));
        assert!(p.contains("\n\nPostgreSQL.\n\n"), "{p}");
    }
}
