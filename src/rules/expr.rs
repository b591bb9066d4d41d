//! Branch conditions in CEL (the `cel` crate), over `labels`, `annotations`, `alert` and
//! `probe.<name>`. Compiled at load and evaluated once against a typed sample context, since
//! the crate has no separate type checker: an unknown identifier, a field a probe kind does not
//! have, a type mismatch, or a condition that is not a boolean is a load error.

use serde_json::Value as Json;

/// The variables a condition sees, as JSON; converted to CEL values per evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables {
    pub labels: serde_json::Map<String, Json>,
    pub annotations: serde_json::Map<String, Json>,
    pub alert: serde_json::Map<String, Json>,
    pub probe: serde_json::Map<String, Json>,
}

impl Variables {
    fn context(&self) -> Result<cel::Context<'static, 'static>, String> {
        let mut context = cel::Context::default();
        for (name, value) in [
            ("labels", &self.labels),
            ("annotations", &self.annotations),
            ("alert", &self.alert),
            ("probe", &self.probe),
        ] {
            let value = cel::to_value(Json::Object(value.clone()))
                .map_err(|error| format!("cannot convert {name} for CEL: {error}"))?;
            context.add_variable_from_value(name, value);
        }
        Ok(context)
    }
}

pub struct Condition {
    pub source: String,
    program: cel::Program,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .finish()
    }
}

/// The longest condition accepted, in bytes. Far above any real condition (the runbooks'
/// longest is under 100), and short enough that parsing and dropping its tree stay shallow.
const MAX_SOURCE_BYTES: usize = 4096;

/// The deepest syntax tree accepted. The interpreter evaluates (and drops) a tree by recursion,
/// with no limit of its own: `1 + 1 + ... + 1` with 1,600 terms overflowed a 2 MiB thread
/// (tokio's, where reloads and decisions run) and aborted the daemon. Real conditions are
/// under 10 deep, macros such as `exists` included; chains of `&&` and `||` are balanced by the
/// parser, so even long ones stay shallow.
const MAX_DEPTH: usize = 32;

impl Condition {
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(format!(
                "the condition is {} bytes long; at most {MAX_SOURCE_BYTES} are accepted",
                source.len()
            ));
        }
        let program = parse(source)?;
        let depth = depth(program.expression());
        if depth > MAX_DEPTH {
            return Err(format!(
                "the condition nests {depth} levels deep; at most {MAX_DEPTH} are accepted"
            ));
        }
        Ok(Condition {
            source: source.to_owned(),
            program,
        })
    }

    /// Evaluate; an evaluation error (a missing label, say) is returned, not taken as false.
    pub fn evaluate(&self, variables: &Variables) -> Result<bool, String> {
        let context = variables.context()?;
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!(
                "the condition must be a boolean, but it gave {}",
                describe(&other)
            )),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Type-check against a sample context. Labels and annotations are open maps (any alert
    /// may carry any label), so a key missing from them is not an error here; every other
    /// error is. A missing key is told apart by adding it to both maps and evaluating again.
    pub fn check(&self, sample: &Variables) -> Result<(), String> {
        let mut sample = sample.clone();
        for _ in 0..32 {
            let context = sample.context()?;
            match self.program.execute(&context) {
                Ok(cel::Value::Bool(_)) => return Ok(()),
                Ok(other) => {
                    return Err(format!(
                        "the condition must be a boolean, but it gives {}",
                        describe(&other)
                    ));
                }
                Err(cel::ExecutionError::NoSuchKey(key)) => {
                    let key = key.as_str().to_owned();
                    if sample.labels.contains_key(&key) {
                        return Err(format!("no such key: {key}"));
                    }
                    sample
                        .labels
                        .insert(key.clone(), Json::String(String::new()));
                    sample.annotations.insert(key, Json::String(String::new()));
                }
                Err(cel::ExecutionError::UndeclaredReference(name)) => {
                    return Err(format!(
                        "unknown identifier {name}; conditions can use labels, annotations, alert and probe"
                    ));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Err("too many distinct label keys to check".to_owned())
    }
}

/// The stack of the thread a condition is parsed on. The generated parser recurses for every
/// bracket with large frames: in a debug build 20 nested parentheses overflowed a 2 MiB stack,
/// before the parser's own limit of 96 levels (which a release build reaches in under 1 MiB).
const PARSER_STACK_BYTES: usize = 64 << 20;

/// A request to the parser thread: the source, and where to answer.
type ParseRequest = (
    String,
    std::sync::mpsc::SyncSender<Result<cel::Program, String>>,
);

/// Parse on the parser thread, whose stack is large enough for the parser's deepest nesting.
/// One thread, started on first use and kept: a rule load compiles every condition of every
/// rule, and a thread per condition cost ~32 µs each (32 ms for 1,000 conditions, a third of
/// the load budget).
fn parse(source: &str) -> Result<cel::Program, String> {
    use std::sync::OnceLock;
    use std::sync::mpsc::{Sender, channel, sync_channel};
    static PARSER: OnceLock<Option<Sender<ParseRequest>>> = OnceLock::new();
    let parser = PARSER.get_or_init(|| {
        let (requests, queue) = channel::<ParseRequest>();
        std::thread::Builder::new()
            .name("cel-parse".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn(move || {
                for (source, answer) in queue {
                    let compiled = std::panic::catch_unwind(|| {
                        cel::Program::compile(&source)
                            .map_err(|errors| format!("invalid CEL: {}", errors.to_string().trim()))
                    })
                    .unwrap_or_else(|_| Err("invalid CEL: the parser failed".to_owned()));
                    let _ = answer.send(compiled);
                }
            })
            .ok()
            .map(|_| requests)
    });
    let parser = parser
        .as_ref()
        .ok_or_else(|| "cannot start the CEL parser thread".to_owned())?;
    let (answer, answered) = sync_channel(1);
    parser
        .send((source.to_owned(), answer))
        .map_err(|_| "the CEL parser thread is gone".to_owned())?;
    answered
        .recv()
        .map_err(|_| "the CEL parser thread is gone".to_owned())?
}

/// The depth of a syntax tree, measured with a list rather than by recursion, so that
/// measuring a deep tree cannot exhaust the stack itself.
fn depth(root: &cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = 0;
    let mut pending = vec![(root, 1)];
    while let Some((node, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        let mut children: Vec<&cel::IdedExpr> = Vec::new();
        match &node.expr {
            Expr::Call(call) => {
                children.extend(call.target.as_deref());
                children.extend(&call.args);
            }
            Expr::Comprehension(comprehension) => children.extend([
                &comprehension.iter_range,
                &comprehension.accu_init,
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ]),
            Expr::List(list) => children.extend(&list.elements),
            Expr::Map(cel::common::ast::MapExpr { entries })
            | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => children.push(&field.value),
                        EntryExpr::MapEntry(entry) => children.extend([&entry.key, &entry.value]),
                    }
                }
            }
            Expr::Select(select) => children.push(&select.operand),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
        pending.extend(children.into_iter().map(|child| (child, depth + 1)));
    }
    deepest
}

fn describe(value: &cel::Value) -> String {
    match value {
        cel::Value::String(text) => format!("the string {text:?}"),
        cel::Value::Int(number) => format!("the integer {number}"),
        cel::Value::UInt(number) => format!("the unsigned integer {number}"),
        cel::Value::Float(number) => format!("the number {number}"),
        cel::Value::Null => "null".to_owned(),
        cel::Value::List(_) => "a list".to_owned(),
        cel::Value::Map(_) => "a map".to_owned(),
        _ => "a non-boolean value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn variables(probe: Json) -> Variables {
        let object = |v: Json| match v {
            Json::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Variables {
            labels: object(json!({"alertname": "VastaiApiUnreachable", "namespace": "vastai"})),
            annotations: object(json!({"summary": "down"})),
            alert: object(json!({"status": "firing", "age_seconds": 120})),
            probe: object(probe),
        }
    }

    fn sample() -> Variables {
        variables(json!({"status": {"ok": true, "indicator": "unknown", "latency_ms": 0}}))
    }

    #[test]
    fn conditions_evaluate_over_all_four_variables() {
        let live =
            variables(json!({"status": {"ok": true, "indicator": "major", "latency_ms": 12}}));
        for (source, expected) in [
            (r#"probe.status.indicator in ["major", "critical"]"#, true),
            (r#"probe.status.indicator == "none""#, false),
            (
                r#"labels.alertname == "VastaiApiUnreachable" && alert.age_seconds > 60"#,
                true,
            ),
            (r#"annotations.summary.contains("down")"#, true),
            (r#"has(labels.team)"#, false),
            (r#"labels.namespace.startsWith("vast")"#, true),
        ] {
            let condition = Condition::compile(source).unwrap();
            condition
                .check(&sample())
                .unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(condition.evaluate(&live), Ok(expected), "{source}");
        }
    }

    #[test]
    fn load_time_check_catches_typos_and_type_errors() {
        for (source, message) in [
            ("probe.status.indicatr == 'major'", "no such key"),
            ("prob.status.ok", "unknown identifier"),
            ("probe.status.indicator > 3", ""),
            ("probe.status.indicator", "must be a boolean"),
            ("probe.other.ok", "no such key"),
        ] {
            let condition = Condition::compile(source).unwrap();
            let error = condition.check(&sample()).unwrap_err();
            assert!(error.contains(message), "{source}: {error}");
        }
        assert!(Condition::compile("probe.status.ok &&").is_err());
    }

    #[test]
    fn labels_are_open_at_load_but_missing_at_runtime_is_an_error() {
        let condition = Condition::compile(r#"labels.team == "gpu""#).unwrap();
        assert_eq!(condition.check(&sample()), Ok(()));
        assert!(condition.evaluate(&sample()).is_err());
    }
}
