//! The JSON Schema of the farm file, for editors (taplo, Even Better TOML).
//! Kept beside `raw.rs`; a test checks that both name the same keys.

use serde_json::{json, Value};

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn strings(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string" }, "description": description })
}

fn duration(description: &str) -> Value {
    json!({ "type": "string", "pattern": "^[0-9]", "description": description })
}

pub fn farm_schema() -> Value {
    let set_value = json!({ "description": "a TOML value: string, number, boolean, array, or a table of such" });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "farmctl farm file",
        "type": "object",
        "required": ["farm"],
        "additionalProperties": false,
        "properties": {
            "farm": {
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {
                    "name": string("the farm's name"),
                    "state_dir": string("absolute directory on each host for locks, backups and armed switches (default /var/lib/farmctl)"),
                    "clock_tolerance": duration("warn at plan time when a host clock is further off (default 500ms)")
                }
            },
            "watch": {
                "type": "object", "additionalProperties": false,
                "description": "where the watchers of `farmctl watch` keep each service's lease: on the members (default), or in etcd",
                "properties": {
                    "etcd": strings("etcd endpoints, http://HOST:PORT or https://HOST:PORT: each service's lease is an etcd lease and a key"),
                    "prefix": string("the etcd key prefix (default /farmctl/FARM/)"),
                    "ttl": duration("how long a holder's etcd lease outlives its last keep-alive, whole seconds (default 5s)"),
                    "ca": string("CA file for https:// endpoints, as etcdctl --cacert"),
                    "cert": string("client certificate, as etcdctl --cert"),
                    "key": string("client certificate's key, as etcdctl --key")
                }
            },
            "ssh": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "user": string("login user"),
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                    "identity_file": string("private key, relative to the farm file"),
                    "config_file": string("ssh_config passed as ssh -F"),
                    "known_hosts_file": string("known_hosts file; host keys are always checked"),
                    "connect_timeout": duration("default 10s"),
                    "command_timeout": duration("a host that takes longer is reported as hung (default 5m)"),
                    "jump": string("ProxyJump host"),
                    "sudo": { "type": "boolean", "description": "run the host side under sudo -n" },
                    "control_persist": duration("idle SSH masters outlive farmctl this long (default 60s; 0s = off)")
                }
            },
            "roles": {
                "type": "object",
                "additionalProperties": {
                    "type": "object", "required": ["files"], "additionalProperties": false,
                    "properties": {
                        "files": strings("absolute paths of the managed config files"),
                        "reload": string("runs once per host after its edits"),
                        "health": string("must pass on a host before clients switch to it"),
                        "retire": string("runs on a replaced host once nothing refers to it"),
                        "set": {
                            "type": "object",
                            "description": "per TOML file: dotted key = desired value",
                            "additionalProperties": { "type": "object", "additionalProperties": set_value }
                        }
                    }
                }
            },
            "hosts": {
                "type": "object",
                "additionalProperties": {
                    "type": "object", "required": ["role"], "additionalProperties": false,
                    "properties": {
                        "address": string("address or DNS name (required for SSH hosts)"),
                        "role": string("a role of [roles]"),
                        "aliases": strings("other names the host is known by"),
                        "user": string("overrides [ssh] user"),
                        "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "transport": { "enum": ["ssh", "local"] },
                        "root": string("for transport = \"local\": the directory standing in for /"),
                        "allow_shared_address": { "type": "boolean", "description": "another host may have the same address and port (two names for one machine); a warning instead of an error" }
                    }
                }
            },
            "rollout": rollout_schema(),
            "services": services_schema(),
            "replace": {
                "type": "array",
                "items": {
                    "type": "object", "required": ["old", "new"], "additionalProperties": false,
                    "properties": {
                        "old": string("a host of [hosts]"),
                        "new": string("a host of [hosts]"),
                        "at": string("RFC 3339 time of the switch; absent means when applied"),
                        "on": strings("roles or hosts this replacement is limited to"),
                        "skip": {
                            "type": "object", "additionalProperties": false,
                            "description": "places this replacement leaves alone (shown in the plan)",
                            "properties": {
                                "paths": strings("files, as `*` globs on the path"),
                                "lines": strings("lines, as `*` globs on the whole line: their names stay")
                            }
                        }
                    }
                }
            }
        }
    })
}

/// `[rollout.ROLE]`: staged upgrades by role.
fn rollout_schema() -> Value {
    json!({
        "type": "object",
        "description": "staged upgrades by role: canary, waves, health gates",
        "additionalProperties": {
            "type": "object", "required": ["version", "probe", "upgrade"], "additionalProperties": false,
            "properties": {
                "version": string("the version every host of the role must run"),
                "probe": string("a command that prints the installed version"),
                "upgrade": string("a command with {version}, which farmctl quotes"),
                "health": string("exit 0 means healthy; name=value lines are metrics (default: the role's health)"),
                "metrics": {
                    "type": "object", "required": ["prometheus"],
                    "description": "Prometheus queries each sample reads: `prometheus` is the server's http URL; every other key names a query, with {host}, {address}, {role} and {version} filled in",
                    "properties": { "prometheus": string("http://HOST:PORT of the Prometheus server") },
                    "additionalProperties": { "type": "string" }
                },
                "canary": { "type": ["integer", "string"], "description": "hosts first, alone: a count or \"N%\" (default 1)" },
                "waves": { "type": "array", "items": { "type": ["integer", "string"] }, "description": "cumulative shares after each wave, ending with \"100%\"" },
                "max_unavailable": { "type": ["integer", "string"], "description": "hosts of the role down at once, by health (default 1)" },
                "gate": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "samples": { "type": "integer", "minimum": 1 },
                        "failure_limit": { "type": "integer", "minimum": 1, "description": "failed samples in a row that fail the gate at once (default 3)" },
                        "conditions": strings("METRIC OP NUMBER, such as \"error_rate < 0.05\", that every sample of every host of the wave must meet"),
                        "interval": string("between samples, such as \"1s\""),
                        "timeout": string("for the whole gate, such as \"60s\"")
                    }
                },
                "requires": { "type": "object", "additionalProperties": { "type": "string" }, "description": "role = semver requirement that must hold while this role runs the new version" },
                "shadow": {
                    "type": "object", "required": ["file", "mirror_key", "active_key", "join"], "additionalProperties": false,
                    "description": "the canary serves mirrored work first, and joins only when it compares well with the active members",
                    "properties": {
                        "file": string("the clients' TOML file that lists the members"),
                        "mirror_key": string("key of the list of mirrored (shadow) members, such as \"web.mirror\""),
                        "active_key": string("key of the list of active members, such as \"web.pool\""),
                        "window": string("how long the canary and the active members are sampled together (default 30s)"),
                        "join": strings("conditions such as \"error_rate <= baseline * 1.1\" or \"p95(p95_ms) <= baseline + 20\""),
                        "judge": {
                            "type": "object", "additionalProperties": false,
                            "properties": { "test": { "enum": ["mann-whitney"] }, "confidence": { "type": "number" } }
                        }
                    }
                }
            }
        }
    })
}

/// `[services.NAME]`: stable names kept up by `farmctl watch`.
fn services_schema() -> Value {
    json!({
        "type": "object",
        "description": "stable names over priority-ordered members, kept up by `farmctl watch`",
        "additionalProperties": {
            "type": "object", "required": ["virtual", "members"], "additionalProperties": false,
            "properties": {
                "virtual": string("the name clients use"),
                "members": strings("hosts of [hosts], in priority order"),
                "check": string("\"ssh\", \"tcp:PORT\" or a command run on the member; each within the heartbeat's deadline"),
                "send": string("with check tcp:PORT: what to send once connected"),
                "expect": string("with check tcp:PORT: text the first line of the answer must hold (without it, a member whose processes hang still passes)"),
                "heartbeat": string("how often the active member is checked (default 1s)"),
                "dead_after": string("silence after which it is dead, once clients confirm (default 3s)"),
                "strategy": { "enum": ["rewrite", "hosts", "address"], "description": "rewrite: the clients' files name the active member; hosts: their hosts file maps the virtual name to it; address: the active member holds a virtual address" },
                "address": string("with strategy address: the virtual address, A.B.C.D/N"),
                "interface": string("with strategy address: the interface that carries it (default: the one holding the member's own address)"),
                "clients": strings("with strategy hosts: roles or hosts whose hosts file carries the virtual name (default: every non-member)"),
                "hosts_file": string("with strategy hosts: the clients' hosts file (default /etc/hosts)"),
                "adopt": string("a standalone server's old name, kept as the virtual name; members[0] is the renamed server"),
                "hostname_file": string("with adopt: where the adopted machine keeps its host name (default /etc/hostname)"),
                "sync": strings("paths copied from the active member to the standbys when they differ"),
                "max_lag": string("a standby whose last good sync is older is not promoted (default 60s)"),
                "preempt": { "type": "boolean" },
                "fence": string("run on the workstation against the dead member; {host} and {address} are filled in"),
                "fence_required": { "type": "boolean" },
                "confirm": { "type": "integer", "minimum": 0 },
                "lease": string("how long a watcher's lease outlives it (default 5x heartbeat, 5s to 30s)")
            }
        }
    })
}
