//! What the gateway serves, described from its own proto contract: every
//! grantable service and method with the comment it has in `proto/`, the
//! record it discloses and every field path of that record with its comment
//! and type. Read once from the descriptor set compiled into the binary (with
//! its source info), so the catalogue can never disagree with the contract.

use std::{collections::HashMap, sync::OnceLock};

use prost::Message;
use prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, FileDescriptorProto, FileDescriptorSet,
};

use crate::policy::{MethodSpec, METHODS};

/// One field path of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDoc {
    pub path: String,
    pub description: String,
    /// Scalar type name (`string`) or full message or enum name.
    pub type_name: String,
    pub repeated: bool,
}

/// One grantable method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodDoc {
    pub spec: MethodSpec,
    pub description: String,
    pub request_type: String,
    pub response_type: String,
    /// Every field path of `spec.record`; empty when it has none.
    pub fields: Vec<FieldDoc>,
}

/// One service with grantable methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDoc {
    pub name: &'static str,
    pub description: String,
    pub methods: Vec<MethodDoc>,
}

/// Field numbers in `descriptor.proto`, for `SourceCodeInfo` paths.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const SERVICE_METHOD: i32 = 2;

/// Only the gateway's own records are walked into; well-known types
/// (`google.protobuf.Timestamp`) are leaves.
const OWN_PACKAGE_PREFIX: &str = "interop.";

/// The services of the gateway's own descriptor set.
pub fn gateway() -> &'static [ServiceDoc] {
    static DOCS: OnceLock<Vec<ServiceDoc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        // Produced by build.rs and compiled in; failing to decode it is a
        // build defect, not input (the catalogue would then be empty).
        let fds = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        describe(&fds, METHODS)
    })
}

/// A message of the set: where it is and its comment path.
struct Located<'a> {
    file: &'a FileDescriptorProto,
    path: Vec<i32>,
    message: &'a DescriptorProto,
}

/// Comments of one file, by `SourceCodeInfo` path.
fn comments(file: &FileDescriptorProto) -> HashMap<Vec<i32>, String> {
    file.source_code_info
        .iter()
        .flat_map(|info| &info.location)
        .filter_map(|loc| {
            let text = loc.leading_comments.as_deref()?;
            Some((loc.path.clone(), clean_comment(text)))
        })
        .collect()
}

/// A proto comment as text: the space after `//` and surrounding blank
/// lines removed, line breaks kept.
fn clean_comment(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// Describes the services of `methods` from `fds`, in the order of `methods`.
pub fn describe(fds: &FileDescriptorSet, methods: &[MethodSpec]) -> Vec<ServiceDoc> {
    let mut messages: HashMap<String, Located<'_>> = HashMap::new();
    let mut file_comments: HashMap<&str, HashMap<Vec<i32>, String>> = HashMap::new();
    for file in &fds.file {
        file_comments.insert(file.name(), comments(file));
        for (i, message) in file.message_type.iter().enumerate() {
            index_message(
                &mut messages,
                file,
                file.package(),
                vec![FILE_MESSAGE_TYPE, i as i32],
                message,
            );
        }
    }
    let comment = |file: &FileDescriptorProto, path: &[i32]| {
        file_comments
            .get(file.name())
            .and_then(|c| c.get(path))
            .cloned()
            .unwrap_or_default()
    };

    let mut services: Vec<ServiceDoc> = Vec::new();
    for spec in methods {
        let service_name = spec.service();
        let found = fds.file.iter().find_map(|file| {
            file.service.iter().enumerate().find_map(|(si, s)| {
                (format!("{}.{}", file.package(), s.name()) == service_name)
                    .then_some((file, si, s))
            })
        });
        let Some((file, si, service)) = found else {
            continue;
        };
        let Some((mi, method)) = service
            .method
            .iter()
            .enumerate()
            .find(|(_, m)| m.name() == spec.short_name())
        else {
            continue;
        };
        let doc = MethodDoc {
            spec: *spec,
            description: comment(file, &[FILE_SERVICE, si as i32, SERVICE_METHOD, mi as i32]),
            request_type: method.input_type().trim_start_matches('.').to_owned(),
            response_type: method.output_type().trim_start_matches('.').to_owned(),
            fields: spec
                .record
                .map(|record| {
                    let mut out = Vec::new();
                    field_paths(&messages, &comment, record, "", &mut out, 0);
                    out
                })
                .unwrap_or_default(),
        };
        match services.iter_mut().find(|s| s.name == service_name) {
            Some(s) => s.methods.push(doc),
            None => services.push(ServiceDoc {
                name: service_name,
                description: comment(file, &[FILE_SERVICE, si as i32]),
                methods: vec![doc],
            }),
        }
    }
    services
}

fn index_message<'a>(
    messages: &mut HashMap<String, Located<'a>>,
    file: &'a FileDescriptorProto,
    scope: &str,
    path: Vec<i32>,
    message: &'a DescriptorProto,
) {
    let name = format!("{scope}.{}", message.name());
    for (i, nested) in message.nested_type.iter().enumerate() {
        let mut nested_path = path.clone();
        nested_path.extend([MESSAGE_NESTED_TYPE, i as i32]);
        index_message(messages, file, &name, nested_path, nested);
    }
    messages.insert(
        name,
        Located {
            file,
            path,
            message,
        },
    );
}

/// Records nest a few levels at most; this bounds a recursive type.
const MAX_DEPTH: usize = 8;

fn field_paths(
    messages: &HashMap<String, Located<'_>>,
    comment: &impl Fn(&FileDescriptorProto, &[i32]) -> String,
    message: &str,
    prefix: &str,
    out: &mut Vec<FieldDoc>,
    depth: usize,
) {
    let Some(located) = messages.get(message) else {
        return;
    };
    for (fi, field) in located.message.field.iter().enumerate() {
        let path = format!("{prefix}{}", field.name());
        let repeated = field.label() == Label::Repeated;
        let type_name = match field.r#type() {
            Type::Message | Type::Enum => field.type_name().trim_start_matches('.').to_owned(),
            scalar => scalar
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_ascii_lowercase(),
        };
        let mut field_path = located.path.clone();
        field_path.extend([MESSAGE_FIELD, fi as i32]);
        out.push(FieldDoc {
            path: path.clone(),
            description: comment(located.file, &field_path),
            type_name: type_name.clone(),
            repeated,
        });
        // A path may not pass through a repeated field (FieldMask rule).
        if field.r#type() == Type::Message
            && !repeated
            && type_name.starts_with(OWN_PACKAGE_PREFIX)
            && depth < MAX_DEPTH
        {
            field_paths(
                messages,
                comment,
                &type_name,
                &format!("{path}."),
                out,
                depth + 1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy, schema::Schema};

    #[test]
    fn every_grantable_method_is_described_with_its_proto_comments() {
        let docs = gateway();
        let methods: Vec<&str> = docs
            .iter()
            .flat_map(|s| s.methods.iter().map(|m| m.spec.name))
            .collect();
        let all: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(methods.len(), all.len());
        for name in all {
            assert!(methods.contains(&name), "{name} missing");
        }
        for service in docs {
            assert!(!service.description.is_empty(), "{}", service.name);
            for m in &service.methods {
                assert!(!m.description.is_empty(), "{}", m.spec.name);
            }
        }
        let citizen = docs
            .iter()
            .find(|s| s.name == policy::CITIZEN_SERVICE)
            .unwrap();
        assert!(citizen
            .description
            .starts_with("Read access to citizen records."));
        let get = &citizen.methods[0];
        assert_eq!(get.spec, policy::GET_CITIZEN);
        assert_eq!(get.request_type, "interop.citizen.v1.GetCitizenRequest");
        assert!(get.description.starts_with("Returns the citizen"));
    }

    #[test]
    fn field_paths_are_exactly_those_a_grant_may_name() {
        let docs = gateway();
        let schema = Schema::gateway();
        for method in docs.iter().flat_map(|s| &s.methods) {
            match method.spec.record {
                None => assert!(method.fields.is_empty()),
                Some(record) => {
                    assert!(!method.fields.is_empty());
                    for f in &method.fields {
                        assert!(
                            schema.resolve(record, &f.path).is_ok(),
                            "{}: {}",
                            record,
                            f.path
                        );
                        assert!(!f.description.is_empty(), "{record}.{}", f.path);
                    }
                }
            }
        }
        let get = docs
            .iter()
            .flat_map(|s| &s.methods)
            .find(|m| m.spec == policy::GET_CITIZEN)
            .unwrap();
        let field = |p: &str| get.fields.iter().find(|f| f.path == p).unwrap();
        assert_eq!(field("full_name").type_name, "string");
        assert_eq!(
            field("permanent_address").type_name,
            "interop.common.v1.Address"
        );
        assert_eq!(field("permanent_address.province_code").type_name, "string");
        assert!(field("permanent_address.province_code")
            .description
            .contains("province"));
        let parcel = docs
            .iter()
            .flat_map(|s| &s.methods)
            .find(|m| m.spec == policy::GET_PARCEL)
            .unwrap();
        let holders = parcel.fields.iter().find(|f| f.path == "holders").unwrap();
        assert!(holders.repeated);
        assert!(!parcel.fields.iter().any(|f| f.path.starts_with("holders.")));
    }
}
