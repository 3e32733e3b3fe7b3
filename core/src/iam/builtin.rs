//! Built-in managed policies. Their documents live in code (so upgrades can extend them
//! as the catalogue grows) and they cannot be edited; each has a row in `policies` so it
//! can be attached like any other.

/// A built-in policy.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub document: &'static str,
}

/// The policy every active user has, attached or not: look after one's own account.
pub const SELF_SERVICE: &str = "SelfService";

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "AdministratorAccess",
        description: "Every action on every resource.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"}
  ]
}"#,
    },
    Builtin {
        name: "DataScientist",
        description: "Notebooks, datasets, labeling jobs, training, registering model versions and endpoints. Cannot approve models or administer access.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Build", "Effect": "Allow",
     "Action": ["datasets:*", "labeling:*", "training:*", "notebooks:*", "endpoints:*",
                "models:List*", "models:Get*", "models:CreateModelGroup", "models:RegisterModelVersion",
                "compute:ListNodes", "compute:GetNode"],
     "Resource": "*"},
    {"Sid": "SeeColleagues", "Effect": "Allow", "Action": ["iam:ListUsers", "iam:ListGroups", "iam:GetCatalogue"], "Resource": "*"}
  ]
}"#,
    },
    Builtin {
        name: "Labeler",
        description: "Work on the tasks of labeling jobs assigned to a work team (group) the user belongs to. Nothing else.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "SeeJobs", "Effect": "Allow", "Action": "labeling:ListLabelingJobs", "Resource": "*"},
    {"Sid": "OwnTeamsTasks", "Effect": "Allow",
     "Action": ["labeling:GetLabelingJob", "labeling:ListTasks", "labeling:SubmitAnnotation"],
     "Resource": "atelier:labeling:job/*",
     "Condition": {"StringEquals": {"atelier:WorkTeam": "${atelier:groups}"}}}
  ]
}"#,
    },
    Builtin {
        name: "Reviewer",
        description: "Read models and approve or reject model versions (never one's own), review labels.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "ReadModels", "Effect": "Allow", "Action": ["models:List*", "models:Get*", "training:List*", "training:Get*", "datasets:List*", "datasets:Get*"], "Resource": "*"},
    {"Sid": "Decide", "Effect": "Allow", "Action": ["models:ApproveModelVersion", "models:RejectModelVersion"], "Resource": "atelier:models:group/*/version/*"},
    {"Sid": "NotOwnVersions", "Effect": "Deny", "Action": ["models:ApproveModelVersion", "models:RejectModelVersion"], "Resource": "*",
     "Condition": {"StringEquals": {"atelier:ResourceCreator": "${atelier:username}"}}},
    {"Sid": "ReviewLabels", "Effect": "Allow", "Action": ["labeling:ListLabelingJobs", "labeling:GetLabelingJob", "labeling:ListTasks", "labeling:ReviewAnnotations"], "Resource": "*"}
  ]
}"#,
    },
    Builtin {
        name: "ReadOnly",
        description: "View everything except access administration and the audit log; change nothing.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Read", "Effect": "Allow",
     "Action": ["datasets:List*", "datasets:Get*", "labeling:List*", "labeling:Get*", "training:List*", "training:Get*",
                "models:List*", "models:Get*", "endpoints:List*", "endpoints:Get*", "notebooks:List*", "notebooks:Get*",
                "compute:List*", "compute:Get*"],
     "Resource": "*"}
  ]
}"#,
    },
    Builtin {
        name: SELF_SERVICE,
        description: "Applies to every user: view one's own account, change one's password, manage one's API tokens.",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "OwnAccount", "Effect": "Allow",
     "Action": ["iam:GetUser", "iam:ChangePassword", "iam:ListAccessTokens", "iam:CreateAccessToken", "iam:DeleteAccessToken"],
     "Resource": "atelier:iam:user/${atelier:username}"}
  ]
}"#,
    },
];

/// The built-in policy called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The id of a built-in policy's row.
pub fn id(name: &str) -> String {
    format!("builtin:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_document_is_valid() {
        for b in BUILTINS {
            assert!(
                crate::iam::document::parse(b.document).is_ok(),
                "{}: {:?}",
                b.name,
                crate::iam::document::parse(b.document).err()
            );
        }
    }
}
