//! The catalogue: every action, resource type and condition key Atelier knows, defined
//! once. Policy validation, the policy editor, the simulator and the OpenAPI document all
//! read it from here.

use serde::Serialize;

/// Whether an action only reads or changes state. Changes are always audited; reads
/// are audited only when denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Access {
    Read,
    Write,
}

/// One catalogue entry, as the UI and the API show it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ActionDef {
    /// `service:Verb`, as written in policy documents.
    pub name: &'static str,
    pub service: &'static str,
    pub access: Access,
    /// The resource name pattern this action is checked against.
    pub resource: &'static str,
    pub description: &'static str,
}

macro_rules! catalogue {
    ($( $service:literal { $( $verb:ident, $access:ident, $resource:literal, $doc:literal; )* } )*) => {
        /// Every action in the catalogue. Variants are named after the verb.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action { $($( $verb, )*)* }

        impl Action {
            /// Every action, in catalogue order.
            pub const ALL: &'static [Action] = &[$($( Action::$verb, )*)*];

            /// The action's catalogue entry.
            pub const fn def(self) -> ActionDef {
                match self {
                    $($( Action::$verb => ActionDef {
                        name: concat!($service, ":", stringify!($verb)),
                        service: $service,
                        access: Access::$access,
                        resource: $resource,
                        description: $doc,
                    }, )*)*
                }
            }
        }
    };
}

catalogue! {
    "iam" {
        GetUser, Read, "atelier:iam:user/{username}", "View a user account, its groups and policies";
        ListUsers, Read, "atelier:iam:user/*", "List user accounts";
        CreateUser, Write, "atelier:iam:user/{username}", "Create a user account (checked against the new name)";
        UpdateUser, Write, "atelier:iam:user/{username}", "Deactivate or reactivate a user";
        ResetPassword, Write, "atelier:iam:user/{username}", "Set another user's password";
        ChangePassword, Write, "atelier:iam:user/{username}", "Change one's own password (the current one is required)";
        ListAccessTokens, Read, "atelier:iam:user/{username}", "List a user's API tokens";
        CreateAccessToken, Write, "atelier:iam:user/{username}", "Create an API token for a user";
        DeleteAccessToken, Write, "atelier:iam:user/{username}", "Revoke a user's API token";
        ListGroups, Read, "atelier:iam:group/*", "List groups";
        GetGroup, Read, "atelier:iam:group/{group}", "View a group, its members and policies";
        CreateGroup, Write, "atelier:iam:group/{group}", "Create a group (checked against the new name)";
        UpdateGroup, Write, "atelier:iam:group/{group}", "Change a group's description or members (adding a member also needs iam:AttachPolicy on each of the group's policies)";
        DeleteGroup, Write, "atelier:iam:group/{group}", "Delete a group";
        ListPolicies, Read, "atelier:iam:policy/*", "List policies";
        GetPolicy, Read, "atelier:iam:policy/{policy}", "View a policy and its versions";
        CreatePolicy, Write, "atelier:iam:policy/{policy}", "Create a customer-managed policy (checked against the new name)";
        UpdatePolicy, Write, "atelier:iam:policy/{policy}", "Add a policy version or roll back to an earlier one";
        DeletePolicy, Write, "atelier:iam:policy/{policy}", "Delete an unattached policy";
        AttachPolicy, Write, "atelier:iam:policy/{policy}", "Attach a policy to a user or group";
        DetachPolicy, Write, "atelier:iam:policy/{policy}", "Detach a policy from a user or group";
        SimulatePolicy, Read, "atelier:iam:user/{username}", "Ask what a user's policies decide for a request";
        GetCatalogue, Read, "atelier:iam:catalogue", "Read the catalogue of actions, resources and condition keys";
    }
    "audit" {
        ListAuditEvents, Read, "atelier:audit:log", "Read and export the audit log";
    }
    "datasets" {
        ListDatasets, Read, "atelier:datasets:dataset/*", "List datasets";
        GetDataset, Read, "atelier:datasets:dataset/{dataset}", "View a dataset and download its files";
        CreateDataset, Write, "atelier:datasets:dataset/*", "Create a dataset";
        UpdateDataset, Write, "atelier:datasets:dataset/{dataset}", "Upload files to or change a dataset";
        DeleteDataset, Write, "atelier:datasets:dataset/{dataset}", "Delete a dataset";
    }
    "labeling" {
        ListLabelingJobs, Read, "atelier:labeling:job/*", "List labeling jobs";
        GetLabelingJob, Read, "atelier:labeling:job/{job}", "View a labeling job and its progress";
        CreateLabelingJob, Write, "atelier:labeling:job/*", "Create a labeling job";
        StopLabelingJob, Write, "atelier:labeling:job/{job}", "Stop a labeling job";
        ListTasks, Read, "atelier:labeling:job/{job}", "List the tasks of a labeling job";
        SubmitAnnotation, Write, "atelier:labeling:job/{job}", "Work on a task and submit an annotation";
        ReviewAnnotations, Write, "atelier:labeling:job/{job}", "Review and correct low-agreement annotations";
        GetLabelingJobOutput, Read, "atelier:labeling:job/{job}", "Download a labeling job's output manifest and read its quality report";
        ListTeams, Read, "atelier:labeling:team/*", "List work teams";
        ManageTeam, Write, "atelier:labeling:team/{team}", "Create a work team or change its members";
    }
    "training" {
        ListTrainingJobs, Read, "atelier:training:job/*", "List training jobs";
        GetTrainingJob, Read, "atelier:training:job/{job}", "View a training job, its logs and metrics";
        CreateTrainingJob, Write, "atelier:training:job/*", "Start a training job";
        StopTrainingJob, Write, "atelier:training:job/{job}", "Stop a training job";
    }
    "models" {
        ListModelGroups, Read, "atelier:models:group/*", "List model groups";
        GetModelGroup, Read, "atelier:models:group/{group}", "View a model group";
        CreateModelGroup, Write, "atelier:models:group/{group}", "Create a model group (checked against the new name)";
        DeleteModelGroup, Write, "atelier:models:group/{group}", "Delete a model group";
        ListModelVersions, Read, "atelier:models:group/{group}", "List a group's model versions";
        GetModelVersion, Read, "atelier:models:group/{group}/version/{version}", "View a model version";
        RegisterModelVersion, Write, "atelier:models:group/{group}", "Register a model version";
        UpdateModelGroup, Write, "atelier:models:group/{group}", "Change a model group's description, tags or name (a rename is also checked as CreateModelGroup on the new name)";
        UpdateApprovalRequirements, Write, "atelier:models:group/{group}", "Change how many distinct approvals a group's versions need";
        UpdateModelVersion, Write, "atelier:models:group/{group}/version/{version}", "Change a version's description, tags or aliases";
        DeleteModelVersion, Write, "atelier:models:group/{group}/version/{version}", "Delete a model version";
        ManageWebhooks, Write, "atelier:models:group/{group}", "Add, list and remove a group's webhooks and see their deliveries (on atelier:models:studio: the studio-wide ones, which see every group)";
        UpdateModelApprovalStatus, Write, "atelier:models:group/{group}/version/{version}", "Approve or reject a model version";
    }
    "endpoints" {
        ListEndpoints, Read, "atelier:endpoints:endpoint/*", "List endpoints";
        GetEndpoint, Read, "atelier:endpoints:endpoint/{endpoint}", "View an endpoint and its monitoring";
        CreateEndpoint, Write, "atelier:endpoints:endpoint/*", "Create an endpoint";
        UpdateEndpoint, Write, "atelier:endpoints:endpoint/{endpoint}", "Change an endpoint's variants or monitoring";
        DeleteEndpoint, Write, "atelier:endpoints:endpoint/{endpoint}", "Delete an endpoint";
        InvokeEndpoint, Write, "atelier:endpoints:endpoint/{endpoint}", "Send an invocation to an endpoint";
    }
    "notebooks" {
        ListNotebooks, Read, "atelier:notebooks:notebook/*", "List notebooks";
        GetNotebook, Read, "atelier:notebooks:notebook/{notebook}", "Open a notebook";
        CreateNotebook, Write, "atelier:notebooks:notebook/*", "Create or import a notebook";
        UpdateNotebook, Write, "atelier:notebooks:notebook/{notebook}", "Edit and save a notebook";
        DeleteNotebook, Write, "atelier:notebooks:notebook/{notebook}", "Delete a notebook";
        RunCell, Write, "atelier:notebooks:notebook/{notebook}", "Start a kernel for a notebook and run its cells";
        ShareNotebook, Write, "atelier:notebooks:notebook/{notebook}", "Share a notebook with users as readers or editors";
        AttachKernel, Write, "atelier:notebooks:kernel/{kernel}", "Run code on, interrupt, restart or shut down a kernel (checked with the user who started it as creator)";
    }
    "compute" {
        ListNodes, Read, "atelier:compute:node/*", "List compute nodes and their GPUs";
        GetNode, Read, "atelier:compute:node/{node}", "View a compute node";
        CreateNodeToken, Write, "atelier:compute:node/*", "Create a token that registers a compute node";
        DeregisterNode, Write, "atelier:compute:node/{node}", "Remove a compute node";
    }
}

impl Action {
    /// `service:Verb`.
    pub const fn name(self) -> &'static str {
        self.def().name
    }

    /// The action named exactly `name`, if the catalogue has it.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// Whether the action changes state.
    pub const fn is_write(self) -> bool {
        matches!(self.def().access, Access::Write)
    }

    /// Data, not configuration: an allowed annotation is recorded as the annotation
    /// itself (who, when, what), thousands an hour per labeler, so it is not an audit
    /// event as well; a refused one is.
    pub const fn is_data_plane(self) -> bool {
        matches!(self, Action::SubmitAnnotation)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The services, in catalogue order.
pub fn services() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for a in Action::ALL {
        if !out.contains(&a.def().service) {
            out.push(a.def().service);
        }
    }
    out
}

/// A resource type: `atelier:<service>:<path>` where `{name}` path segments are filled in.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResourceType {
    pub service: &'static str,
    pub pattern: &'static str,
}

/// Every resource type, derived from the actions so that the two never disagree.
pub fn resource_types() -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = Vec::new();
    for a in Action::ALL {
        let def = a.def();
        // `.../*` entries name collections, whose member type is listed elsewhere.
        if def.resource.ends_with("/*") || out.iter().any(|r| r.pattern == def.resource) {
            continue;
        }
        out.push(ResourceType { service: def.service, pattern: def.resource });
    }
    out
}

/// The kind of value a condition key holds, which decides the operators that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyType {
    String,
    Bool,
    Date,
}

/// A condition key.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConditionKey {
    pub name: &'static str,
    pub key_type: KeyType,
    pub description: &'static str,
}

/// Condition keys. `atelier:ResourceTag/<tag>` stands for one key per tag name.
pub const CONDITION_KEYS: &[ConditionKey] = &[
    ConditionKey { name: "atelier:username", key_type: KeyType::String, description: "The acting user's username" },
    ConditionKey { name: "atelier:userid", key_type: KeyType::String, description: "The acting user's id" },
    ConditionKey {
        name: "atelier:ResourceCreator",
        key_type: KeyType::String,
        description: "The username of whoever created (registered, submitted) the resource",
    },
    ConditionKey {
        name: "atelier:ResourceTag/",
        key_type: KeyType::String,
        description: "A tag of the resource, e.g. atelier:ResourceTag/team",
    },
    ConditionKey {
        name: "atelier:WorkTeam",
        key_type: KeyType::String,
        description: "The work team (a group) that a labeling job's tasks are assigned to",
    },
    ConditionKey {
        name: "atelier:NotebookRole",
        key_type: KeyType::String,
        description: "The acting user's role on a notebook: owner, editor, reader (shared with them) or none",
    },
    ConditionKey {
        name: "atelier:SourceIp",
        key_type: KeyType::String,
        description: "The client's address (use StringLike for prefixes)",
    },
    ConditionKey {
        name: "atelier:ViaApiToken",
        key_type: KeyType::Bool,
        description: "Whether the request was authenticated with an API token",
    },
    ConditionKey {
        name: "atelier:CurrentTime",
        key_type: KeyType::Date,
        description: "The time of the request (RFC 3339 in policies)",
    },
];

/// The canonical spelling and type of a condition key (keys compare case-insensitively,
/// as in IAM; the tag name after `ResourceTag/` keeps its case).
pub fn condition_key(name: &str) -> Option<(String, KeyType)> {
    const TAG: &str = "atelier:resourcetag/";
    if name.len() > TAG.len() && name.is_char_boundary(TAG.len()) && name[..TAG.len()].eq_ignore_ascii_case(TAG) {
        let tag = &name[TAG.len()..];
        let ok = tag.len() <= 64 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        return ok.then(|| (format!("atelier:ResourceTag/{tag}"), KeyType::String));
    }
    CONDITION_KEYS
        .iter()
        .find(|k| !k.name.ends_with('/') && k.name.eq_ignore_ascii_case(name))
        .map(|k| (k.name.to_string(), k.key_type))
}

/// Policy variables, substituted per principal when policies are compiled.
pub const VARIABLES: &[(&str, &str)] = &[
    ("${atelier:username}", "The acting user's username"),
    ("${atelier:userid}", "The acting user's id"),
    ("${atelier:groups}", "Each group the acting user belongs to (condition values only; matches any)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique_and_round_trip() {
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(*a));
            assert!(a.def().resource.starts_with(&format!("atelier:{}:", a.def().service)));
        }
        assert_eq!(Action::from_name("iam:getuser"), None);
    }

    #[test]
    fn condition_keys_are_case_insensitive_but_tags_keep_their_case() {
        assert_eq!(condition_key("ATELIER:USERNAME"), Some(("atelier:username".into(), KeyType::String)));
        assert_eq!(
            condition_key("atelier:resourcetag/Team"),
            Some(("atelier:ResourceTag/Team".into(), KeyType::String))
        );
        assert_eq!(condition_key("atelier:ResourceTag/"), None);
        assert_eq!(condition_key("atelier:ResourceTag/a b"), None);
        assert_eq!(condition_key("aws:username"), None);
        assert_eq!(condition_key("atelier:CurrentTime").map(|k| k.1), Some(KeyType::Date));
    }
}
