//! Unit tests of `rbac.rs`: rule matching, the default policy, and RBAC
//! YAML decoding and validation.

use super::*;

fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(verb, group, resource, ns, name)
}

fn sa(ns: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        uid: String::new(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    }
}

const YAML: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: kube-system}
rules:
- apiGroups: ["example.com"]
  resources: ["widgets"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent-reads, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: ServiceAccount, name: agent}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: one-node}
rules:
- apiGroups: [""]
  resources: ["nodes"]
  resourceNames: ["n1"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: via-cluster-role, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: one-node}
subjects:
- {kind: User, name: alice}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bob-one-node}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: one-node}
subjects:
- {kind: User, name: bob}
"#;

#[test]
fn a_role_applies_only_in_its_namespace_and_a_namespaceless_sa_subject_means_the_bindings() {
    let r = Rbac::from_yaml(YAML).unwrap();
    let u = sa("kube-system", "agent");
    assert!(r
        .authorize(
            &u,
            &attrs("list", "example.com", "widgets", "kube-system", "")
        )
        .is_ok());
    assert!(r
        .authorize(&u, &attrs("list", "example.com", "widgets", "default", ""))
        .is_err());
    // All namespaces: a RoleBinding never grants a cluster-wide list.
    assert!(r
        .authorize(&u, &attrs("list", "example.com", "widgets", "", ""))
        .is_err());
    // Another namespace's service account of the same name.
    assert!(r
        .authorize(
            &sa("default", "agent"),
            &attrs("list", "example.com", "widgets", "kube-system", "")
        )
        .is_err());
}

#[test]
fn resource_names_allow_get_by_name_and_list_only_with_the_matching_name() {
    let r = Rbac::from_yaml(YAML).unwrap();
    let bob = UserInfo {
        name: "bob".into(),
        uid: String::new(),
        groups: vec!["system:authenticated".into()],
    };
    assert!(r
        .authorize(&bob, &attrs("get", "", "nodes", "", "n1"))
        .is_ok());
    assert!(r
        .authorize(&bob, &attrs("get", "", "nodes", "", "n2"))
        .is_err());
    // A list carries the name only with fieldSelector=metadata.name=n1.
    assert!(r
        .authorize(&bob, &attrs("list", "", "nodes", "", "n1"))
        .is_ok());
    assert!(r
        .authorize(&bob, &attrs("list", "", "nodes", "", ""))
        .is_err());
    // A RoleBinding to a ClusterRole grants it in that namespace only,
    // and nodes are cluster-scoped.
    let alice = UserInfo {
        name: "alice".into(),
        ..bob
    };
    assert!(r
        .authorize(&alice, &attrs("get", "", "nodes", "", "n1"))
        .is_err());
}

#[test]
fn a_binding_to_a_missing_role_is_the_rbac_reason() {
    let r = Rbac::from_yaml(YAML)
        .unwrap()
        .without("ClusterRole", "one-node");
    let bob = UserInfo {
        name: "bob".into(),
        uid: String::new(),
        groups: vec![],
    };
    assert_eq!(
        r.authorize(&bob, &attrs("get", "", "nodes", "", "n1")),
        Err("RBAC: clusterrole.rbac.authorization.k8s.io \"one-node\" not found".into())
    );
}

#[test]
fn invalid_rbac_is_refused_as_the_api_server_refuses_it() {
    let bad = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects:\n- {kind: ServiceAccount, name: sa}\n";
    let e = Rbac::from_yaml(bad).unwrap_err();
    assert!(
            e.contains("ClusterRoleBinding.rbac.authorization.k8s.io \"b\" is invalid: [roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\", subjects[0].namespace: Required value]"),
            "{e}"
        );
    let typo = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- apiGroups: [\"\"]\n  resources: [nodes]\n  verb: [get]\n";
    let e = Rbac::from_yaml(typo).unwrap_err();
    assert!(e.contains("unknown field \"rules[0].verb\""), "{e}");
    let old =
        "apiVersion: rbac.authorization.k8s.io/v1beta1\nkind: ClusterRole\nmetadata: {name: r}\n";
    assert!(Rbac::from_yaml(old).unwrap_err().contains("v1beta1"));
}

#[test]
#[should_panic(expected = "there is no ClusterRoleBinding named \"nope\"")]
fn without_an_object_that_is_not_there_panics() {
    let _ = Rbac::from_yaml(YAML)
        .unwrap()
        .without("ClusterRoleBinding", "nope");
}

#[test]
fn the_kubeadm_profile_auto_approves_and_own_approver_does_not() {
    let bootstrap = UserInfo {
        name: "system:bootstrap:abcdef".into(),
        uid: String::new(),
        groups: vec![
            "system:bootstrappers".into(),
            KUBEADM_NODE_TOKEN_GROUP.into(),
            "system:authenticated".into(),
        ],
    };
    let mut nodeclient = attrs(
        "create",
        "certificates.k8s.io",
        "certificatesigningrequests",
        "",
        "",
    );
    nodeclient.subresource = "nodeclient".into();
    let create = attrs(
        "create",
        "certificates.k8s.io",
        "certificatesigningrequests",
        "",
        "",
    );
    let k = Rbac::defaults(Profile::Kubeadm);
    let o = Rbac::defaults(Profile::OwnApprover);
    assert!(k.authorize(&bootstrap, &create).is_ok());
    assert!(o.authorize(&bootstrap, &create).is_ok());
    assert!(k.authorize(&bootstrap, &nodeclient).is_ok());
    assert!(o.authorize(&bootstrap, &nodeclient).is_err());
    // A token outside kubeadm's group may not even file a CSR.
    let bare = UserInfo {
        groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        ..bootstrap
    };
    assert!(k.authorize(&bare, &create).is_err());
}
