//! object: the `kubernetes_object` collector. `{kind}-{name}.json`, the workload without
//! `metadata.managedFields` and without the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (a copy of the object as applied, env values and all); every literal
//! `env[].value` of its containers is `<redacted>` (a `valueFrom` only names where a value
//! lives, and is kept). Only Deployments, StatefulSets and DaemonSets are read
//! ([`Workload::parse`]): never a Secret.

use serde_json::Value;

use super::super::files::{Files, Keep};
use super::super::{Collected, Failure, pretty_json};
use crate::kubernetes::{Workload, get_workload};

pub(in crate::bundle::collectors) async fn collect(
    client: &kube::Client,
    workload: &Workload,
    files: &mut Files,
) -> Collected {
    let mut object = get_workload(client, workload)
        .await
        .map_err(|error| Failure::Failed(error.text()))?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    mask_object(&mut object);
    files.add(
        format!("{}-{}.json", workload.kind.as_str(), workload.name),
        pretty_json(&object),
        Keep::Head,
    );
    Ok(None)
}

/// The annotation `kubectl apply` keeps: the whole object as last applied, env values and
/// all.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what in a workload may hold secrets the patterns cannot know: every literal
/// `env[].value` (wherever a container list has one: containers, init and ephemeral
/// containers) becomes `<redacted>`, and the last-applied annotation goes. A `valueFrom` only
/// names a Secret or ConfigMap key, and is kept; an empty value says nothing, and is kept.
fn mask_object(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(annotations)) = map.get_mut("annotations") {
                annotations.remove(LAST_APPLIED);
            }
            if let Some(Value::Array(variables)) = map.get_mut("env") {
                for variable in variables.iter_mut() {
                    if let Some(literal) = variable.get_mut("value")
                        && !literal.is_null()
                        && literal.as_str() != Some("")
                    {
                        *literal = Value::String(crate::redact::REDACTED.to_owned());
                    }
                }
            }
            for child in map.values_mut() {
                mask_object(child);
            }
        }
        Value::Array(items) => {
            for item in items {
                mask_object(item);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_keeps_no_literal_env_value_nor_its_last_applied_copy() {
        let containers = json!([{
            "name": "app",
            "env": [
                {"name": "DB_PASSWORD", "value": "hunter2-literal"},
                {"name": "EMPTY", "value": ""},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
            ]
        }]);
        let mut object = json!({
            "metadata": {"annotations": {
                LAST_APPLIED: "{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2-literal\"}]}",
                "deployment.kubernetes.io/revision": "3"
            }},
            "spec": {"template": {"spec": {"containers": containers, "initContainers": containers}}}
        });
        mask_object(&mut object);
        assert!(!object.to_string().contains("hunter2"), "{object:#}");
        assert_eq!(
            object["metadata"]["annotations"],
            json!({"deployment.kubernetes.io/revision": "3"})
        );
        for list in ["containers", "initContainers"] {
            let env = &object["spec"]["template"]["spec"][list][0]["env"];
            assert_eq!(
                env[0],
                json!({"name": "DB_PASSWORD", "value": "<redacted>"})
            );
            assert_eq!(env[1], json!({"name": "EMPTY", "value": ""}));
            assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["key"], "pw");
        }
    }
}
