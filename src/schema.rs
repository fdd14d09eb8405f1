//! The shape of the registry records, read from the compiled descriptor set:
//! which field paths exist, their field numbers, and which fields are repeated
//! or messages. Field masks are checked and compiled against this, so the proto
//! files stay the single source of truth for what a path means.

use std::{collections::HashMap, sync::OnceLock};

use prost::Message;
use prost_types::{field_descriptor_proto::Label, field_descriptor_proto::Type, FileDescriptorSet};

/// One field of a message.
#[derive(Clone, Debug)]
pub struct FieldInfo {
    pub number: u32,
    pub repeated: bool,
    /// Fully-qualified message type (without leading dot) for message fields.
    pub message: Option<String>,
}

/// Field name -> field, for one message.
#[derive(Clone, Debug, Default)]
pub struct MessageInfo {
    pub fields: HashMap<String, FieldInfo>,
}

/// Every message of the descriptor set, by fully-qualified name.
#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, MessageInfo>,
    /// `package.Service/Method` names of every service method.
    methods: Vec<String>,
}

/// Why a field path is not valid for a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{path:?} is not a field path of {message}: no field {segment:?}")]
    NoSuchField {
        path: String,
        message: String,
        segment: String,
    },
    #[error("{path:?}: {segment:?} is a repeated field; a field path may only end at it")]
    ThroughRepeated { path: String, segment: String },
    #[error("{path:?}: {segment:?} is not a message, so it has no sub-fields")]
    ThroughScalar { path: String, segment: String },
    #[error("{path:?} is not a well-formed field path (lower_snake_case names joined by '.')")]
    Malformed { path: String },
}

impl Schema {
    /// The schema of the gateway's own protos.
    pub fn gateway() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            // The descriptor set is produced by build.rs from proto/ and compiled
            // into the binary; failing to decode it is a build defect, not input.
            let fds =
                FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
            Schema::from_descriptor_set(&fds)
        })
    }

    pub fn from_descriptor_set(fds: &FileDescriptorSet) -> Self {
        let mut schema = Schema::default();
        for file in &fds.file {
            let package = file.package();
            for message in &file.message_type {
                schema.add_message(package, message);
            }
            for service in &file.service {
                for method in &service.method {
                    schema
                        .methods
                        .push(format!("{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, message: &prost_types::DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        let mut info = MessageInfo::default();
        for field in &message.field {
            let is_message = field.r#type() == Type::Message;
            info.fields.insert(
                field.name().to_owned(),
                FieldInfo {
                    number: field.number() as u32,
                    repeated: field.label() == Label::Repeated,
                    message: is_message
                        .then(|| field.type_name().trim_start_matches('.').to_owned()),
                },
            );
        }
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        self.messages.insert(name, info);
    }

    pub fn message(&self, name: &str) -> Option<&MessageInfo> {
        self.messages.get(name)
    }

    /// Every `package.Service/Method` in the descriptor set.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// Resolves a dotted path against `message`, returning the field numbers
    /// along it. Paths may end at a repeated field but not pass through one
    /// (the `google.protobuf.FieldMask` rule).
    pub fn resolve(&self, message: &str, path: &str) -> Result<Vec<u32>, PathError> {
        let well_formed = !path.is_empty()
            && path.split('.').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !well_formed {
            return Err(PathError::Malformed {
                path: path.to_owned(),
            });
        }
        let mut current = message.to_owned();
        let mut numbers = Vec::new();
        let segments: Vec<&str> = path.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let field = self
                .messages
                .get(&current)
                .and_then(|m| m.fields.get(*segment))
                .ok_or_else(|| PathError::NoSuchField {
                    path: path.to_owned(),
                    message: current.clone(),
                    segment: (*segment).to_owned(),
                })?;
            numbers.push(field.number);
            let last = i + 1 == segments.len();
            if !last {
                if field.repeated {
                    return Err(PathError::ThroughRepeated {
                        path: path.to_owned(),
                        segment: (*segment).to_owned(),
                    });
                }
                match &field.message {
                    Some(m) => current = m.clone(),
                    None => {
                        return Err(PathError::ThroughScalar {
                            path: path.to_owned(),
                            segment: (*segment).to_owned(),
                        })
                    }
                }
            }
        }
        Ok(numbers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_paths_and_rejects_bad_ones() {
        let s = Schema::gateway();
        assert_eq!(
            s.resolve(
                "interop.citizen.v1.Citizen",
                "permanent_address.province_code"
            ),
            Ok(vec![8, 4])
        );
        assert!(matches!(
            s.resolve("interop.citizen.v1.Citizen", "nope"),
            Err(PathError::NoSuchField { .. })
        ));
        assert!(matches!(
            s.resolve("interop.land.v1.Parcel", "holders.name"),
            Err(PathError::ThroughRepeated { .. })
        ));
        assert!(matches!(
            s.resolve("interop.citizen.v1.Citizen", "full_name.x"),
            Err(PathError::ThroughScalar { .. })
        ));
        assert!(matches!(
            s.resolve("interop.citizen.v1.Citizen", "Full_Name"),
            Err(PathError::Malformed { .. })
        ));
        assert!(s
            .methods()
            .iter()
            .any(|m| m == "interop.land.v1.LandRegistryService/ListParcelsByHolder"));
    }
}
