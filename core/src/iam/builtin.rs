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
     "Action": ["datasets:*", "labeling:*", "training:*", "endpoints:*",
                "models:List*", "models:Get*", "models:CreateModelGroup", "models:UpdateModelGroup", "models:DeleteModelGroup",
                "models:RegisterModelVersion", "models:UpdateModelVersion", "models:DeleteModelVersion",
                "compute:ListNodes", "compute:GetNode"],
     "Resource": "*"},
    {"Sid": "GroupWebhooks", "Effect": "Allow", "Action": "models:ManageWebhooks", "Resource": "atelier:models:group/*"},
    {"Sid": "Notebooks", "Effect": "Allow", "Action": ["notebooks:ListNotebooks", "notebooks:CreateNotebook"], "Resource": "*"},
    {"Sid": "OwnNotebooks", "Effect": "Allow", "Action": "notebooks:*", "Resource": "atelier:notebooks:notebook/*",
     "Condition": {"StringEquals": {"atelier:NotebookRole": "owner"}}},
    {"Sid": "EditSharedNotebooks", "Effect": "Allow", "Action": ["notebooks:GetNotebook", "notebooks:UpdateNotebook", "notebooks:RunCell"],
     "Resource": "atelier:notebooks:notebook/*", "Condition": {"StringEquals": {"atelier:NotebookRole": "editor"}}},
    {"Sid": "ReadSharedNotebooks", "Effect": "Allow", "Action": "notebooks:GetNotebook", "Resource": "atelier:notebooks:notebook/*",
     "Condition": {"StringEquals": {"atelier:NotebookRole": "reader"}}},
    {"Sid": "OwnKernels", "Effect": "Allow", "Action": "notebooks:AttachKernel", "Resource": "atelier:notebooks:kernel/*",
     "Condition": {"StringEquals": {"atelier:ResourceCreator": "${atelier:username}"}}},
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
    {"Sid": "Decide", "Effect": "Allow", "Action": "models:UpdateModelApprovalStatus", "Resource": "atelier:models:group/*/version/*"},
    {"Sid": "NotOwnVersions", "Effect": "Deny", "Action": "models:UpdateModelApprovalStatus", "Resource": "*",
     "Condition": {"StringEquals": {"atelier:ResourceCreator": "${atelier:username}"}}},
    {"Sid": "ReviewLabels", "Effect": "Allow", "Action": ["labeling:ListLabelingJobs", "labeling:GetLabelingJob", "labeling:ListTasks", "labeling:ReviewAnnotations", "labeling:GetLabelingJobOutput"], "Resource": "*"}
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
    use crate::iam::engine::{CompiledPolicies, Facts, Vars};
    use crate::iam::{document, Action};

    /// A user holding SelfService and `policy`, as `store::compile_for_user` builds it.
    fn compiled(policy: &str) -> CompiledPolicies {
        let docs: Vec<(&str, document::PolicyDocument)> = [SELF_SERVICE, policy]
            .iter()
            .map(|n| (*n, document::parse(find(n).map(|b| b.document).unwrap_or_default()).expect("test input")))
            .collect();
        let vars = Vars { username: "alice".into(), userid: "u-alice".into(), groups: vec!["signs".into()] };
        CompiledPolicies::compile(docs.iter().map(|(n, d)| (*n, d)), &vars).expect("test input")
    }

    /// The action's resource template filled in for someone else's resource (bob's
    /// account, a version bob registered, a job for alice's team).
    fn facts(action: Action) -> Facts {
        let name = action
            .def()
            .resource
            .replace("{username}", "bob")
            .replace("{version}", "3")
            .replace("{group}", "fraud")
            .replace(['{', '}'], "");
        let mut f = Facts::new(name);
        f.set("atelier:ResourceCreator", "bob").set("atelier:WorkTeam", "signs");
        f
    }

    /// The table: what each built-in policy allows, written out by hand so that a change
    /// to a built-in document shows up here as a decision that changed.
    const MATRIX: &[(&str, &[&str])] = &[
        (
            "Labeler",
            &[
                "labeling:ListLabelingJobs",
                "labeling:GetLabelingJob",
                "labeling:ListTasks",
                "labeling:SubmitAnnotation",
            ],
        ),
        (
            "Reviewer",
            &[
                "datasets:ListDatasets",
                "datasets:GetDataset",
                "labeling:ListLabelingJobs",
                "labeling:GetLabelingJob",
                "labeling:ListTasks",
                "labeling:ReviewAnnotations",
                "labeling:GetLabelingJobOutput",
                "training:ListTrainingJobs",
                "training:GetTrainingJob",
                "models:ListModelGroups",
                "models:GetModelGroup",
                "models:ListModelVersions",
                "models:GetModelVersion",
                "models:UpdateModelApprovalStatus",
            ],
        ),
        (
            "ReadOnly",
            &[
                "datasets:ListDatasets",
                "datasets:GetDataset",
                "labeling:ListLabelingJobs",
                "labeling:GetLabelingJob",
                "labeling:GetLabelingJobOutput",
                "labeling:ListTasks",
                "labeling:ListTeams",
                "training:ListTrainingJobs",
                "training:GetTrainingJob",
                "models:ListModelGroups",
                "models:GetModelGroup",
                "models:ListModelVersions",
                "models:GetModelVersion",
                "endpoints:ListEndpoints",
                "endpoints:GetEndpoint",
                "notebooks:ListNotebooks",
                "notebooks:GetNotebook",
                "compute:ListNodes",
                "compute:GetNode",
            ],
        ),
        (
            "DataScientist",
            &[
                "iam:ListUsers",
                "iam:ListGroups",
                "iam:GetCatalogue",
                "datasets:ListDatasets",
                "datasets:GetDataset",
                "datasets:CreateDataset",
                "datasets:UpdateDataset",
                "datasets:DeleteDataset",
                "labeling:ListLabelingJobs",
                "labeling:GetLabelingJob",
                "labeling:CreateLabelingJob",
                "labeling:StopLabelingJob",
                "labeling:ListTasks",
                "labeling:SubmitAnnotation",
                "labeling:ReviewAnnotations",
                "labeling:GetLabelingJobOutput",
                "labeling:ListTeams",
                "labeling:ManageTeam",
                "training:ListTrainingJobs",
                "training:GetTrainingJob",
                "training:CreateTrainingJob",
                "training:StopTrainingJob",
                "models:ListModelGroups",
                "models:GetModelGroup",
                "models:CreateModelGroup",
                "models:DeleteModelGroup",
                "models:ListModelVersions",
                "models:GetModelVersion",
                "models:RegisterModelVersion",
                "models:UpdateModelGroup",
                "models:UpdateModelVersion",
                "models:DeleteModelVersion",
                "models:ManageWebhooks",
                "endpoints:ListEndpoints",
                "endpoints:GetEndpoint",
                "endpoints:CreateEndpoint",
                "endpoints:UpdateEndpoint",
                "endpoints:DeleteEndpoint",
                "endpoints:InvokeEndpoint",
                "notebooks:ListNotebooks",
                "notebooks:CreateNotebook",
                "compute:ListNodes",
                "compute:GetNode",
            ],
        ),
    ];

    #[test]
    fn every_builtin_policy_against_every_action() {
        for (policy, allowed) in MATRIX {
            let c = compiled(policy);
            for action in Action::ALL {
                let expected = allowed.contains(&action.name());
                let got = c.evaluate(*action, &facts(*action)).expect("test input").allowed();
                assert_eq!(got, expected, "{policy} / {}", action.name());
            }
        }
        let admin = compiled("AdministratorAccess");
        assert!(Action::ALL.iter().all(|a| admin.evaluate(*a, &facts(*a)).expect("test input").allowed()));
    }

    #[test]
    fn self_service_covers_only_ones_own_account() {
        let c = compiled("Labeler");
        let own = Facts::new("atelier:iam:user/alice");
        for a in [Action::GetUser, Action::ChangePassword, Action::CreateAccessToken, Action::DeleteAccessToken] {
            assert!(c.evaluate(a, &own).expect("test input").allowed(), "{a}");
        }
        assert!(
            !c.evaluate(Action::UpdateUser, &own).expect("test input").allowed(),
            "nobody reactivates or promotes themselves"
        );
        assert!(!c.evaluate(Action::ResetPassword, &own).expect("test input").allowed());
    }

    #[test]
    fn labelers_work_only_for_their_teams_and_reviewers_never_approve_their_own() {
        let labeler = compiled("Labeler");
        let mut other_team = Facts::new("atelier:labeling:job/street-signs");
        other_team.set("atelier:WorkTeam", "birds");
        assert!(!labeler.evaluate(Action::SubmitAnnotation, &other_team).expect("test input").allowed());

        let reviewer = compiled("Reviewer");
        let mut own = Facts::new("atelier:models:group/fraud/version/3");
        own.set("atelier:ResourceCreator", "alice");
        let e = reviewer.evaluate(Action::UpdateModelApprovalStatus, &own).expect("test input");
        assert_eq!(e.outcome, crate::iam::Outcome::ExplicitDeny);
        assert_eq!(e.decided_by[0].sid.as_deref(), Some("NotOwnVersions"));
    }

    #[test]
    fn data_scientists_act_on_notebooks_by_their_role() {
        let c = compiled("DataScientist");
        let as_role = |role: &str, action: Action| {
            let mut f = Facts::new("atelier:notebooks:notebook/n1");
            f.set("atelier:ResourceCreator", "bob").set("atelier:NotebookRole", role);
            c.evaluate(action, &f).expect("test input").allowed()
        };
        use Action::*;
        for (role, allowed) in [
            ("owner", &[GetNotebook, UpdateNotebook, RunCell, DeleteNotebook, ShareNotebook][..]),
            ("editor", &[GetNotebook, UpdateNotebook, RunCell][..]),
            ("reader", &[GetNotebook][..]),
            ("none", &[][..]),
        ] {
            for action in [GetNotebook, UpdateNotebook, RunCell, DeleteNotebook, ShareNotebook] {
                assert_eq!(as_role(role, action), allowed.contains(&action), "{role} / {action}");
            }
        }
        let mut own_kernel = Facts::new("atelier:notebooks:kernel/k1");
        own_kernel.set("atelier:ResourceCreator", "alice");
        assert!(c.evaluate(AttachKernel, &own_kernel).expect("test input").allowed());
        own_kernel.set("atelier:ResourceCreator", "bob");
        assert!(!c.evaluate(AttachKernel, &own_kernel).expect("test input").allowed(), "another user's kernel");
    }

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
