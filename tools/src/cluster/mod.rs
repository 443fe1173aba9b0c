//! `sluice cluster`: the cluster as one node's admin endpoint sees it (`GET /cluster`),
//! preferred-leader election through the active controller (`POST /cluster/elect-leaders`)
//! and controller membership changes (`POST /cluster/controllers/add`, `/remove`). Any
//! node answers; its view comes from its metadata image and its last exchange with the
//! controller quorum. Partition reassignment (`reassign`, `reassignments`) and named
//! elections go through a broker's Kafka listener instead.

mod elect;
mod reassign;

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Bound on one admin request (elect-leaders waits for the controller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Brokers (rack, fenced or not), the controller leader, raft term and commit index,
    /// under-replicated and offline partitions.
    Status {
        /// Admin endpoint of any broker.
        #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT")]
        admin: String,
        /// Print the broker's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Move leadership to each partition's preferred replica where it is alive and in the
    /// ISR; with `--partition` or `--unclean`, Kafka's ElectLeaders for those partitions
    /// through `--bootstrap`.
    ElectLeaders {
        /// Admin endpoint of any broker.
        #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT")]
        admin: String,
        /// Only these partitions, `TOPIC/PARTITION` (repeatable; with `--unclean`, at
        /// least one).
        #[arg(long = "partition", value_name = "TOPIC/PARTITION")]
        partitions: Vec<String>,
        /// Give leaderless partitions a leader even outside the ISR and ELR (records the
        /// old ISR acknowledged may be lost).
        #[arg(long, requires = "partitions")]
        unclean: bool,
        /// A broker's Kafka listener, for `--partition` and `--unclean`.
        #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
        bootstrap: String,
    },
    /// Move a partition's replicas (Kafka's AlterPartitionReassignments): the new replicas
    /// catch up as followers, then the replica set switches, leadership leaves a removed
    /// replica and the removed ones delete their copy. `--cancel` reverts one under way.
    Reassign {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The new replicas, the first the preferred leader.
        #[arg(
            long,
            value_name = "ID,ID,...",
            required_unless_present = "cancel",
            conflicts_with = "cancel"
        )]
        replicas: Option<String>,
        /// Cancel the partition's reassignment: back to its original replicas.
        #[arg(long)]
        cancel: bool,
        /// A broker's Kafka listener.
        #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
        bootstrap: String,
    },
    /// Partitions being reassigned (Kafka's ListPartitionReassignments): replicas, those
    /// being added and those being removed.
    Reassignments {
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
        /// Only these partitions of `--topic` (repeatable; none: all of them).
        #[arg(long = "partition", requires = "topic")]
        partitions: Vec<i32>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// A broker's Kafka listener.
        #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
        bootstrap: String,
    },
    /// Add a controller to the quorum as a voter: `ID@HOST:PORT`, its quorum address. Start
    /// it first (`--roles controller` or `broker,controller`, with a `--controller-quorum`
    /// that lists it); it waits as a non-voter until this applies.
    AddController {
        /// The new controller: `ID@HOST:PORT`.
        #[arg(value_name = "ID@HOST:PORT")]
        controller: String,
        /// Admin endpoint of any node.
        #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT")]
        admin: String,
    },
    /// Remove a controller from the quorum's voters (the active one included: it hands
    /// leadership to another voter). Stop the removed node afterwards.
    RemoveController {
        /// The controller's id.
        #[arg(value_name = "ID")]
        id: u64,
        /// Admin endpoint of any node.
        #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT")]
        admin: String,
    },
    /// The partition → core map of one broker, with per-core partitions, bytes in and out
    /// and request rates (its admin endpoint's GET /placement).
    Placement(crate::placement::PlacementArgs),
}

pub fn main(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Placement(args) => crate::placement::show(args),
        ClusterCommand::Status { admin, json } => {
            let body = request(&admin, "GET", "/cluster")?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let v: Value = serde_json::from_str(&body).context("the /cluster answer")?;
            print!("{}", render_status(&v));
            Ok(())
        }
        ClusterCommand::AddController { controller, admin } => {
            let (id, address) = parse_controller(&controller)?;
            let path = format!("/cluster/controllers/add?id={id}&address={address}");
            let body = request(&admin, "POST", &path)?;
            print_membership(&format!("controller {id} ({address}) added"), &body)
        }
        ClusterCommand::RemoveController { id, admin } => {
            let path = format!("/cluster/controllers/remove?id={id}");
            let body = request(&admin, "POST", &path)?;
            print_membership(&format!("controller {id} removed"), &body)
        }
        ClusterCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel: _,
            bootstrap,
        } => {
            let replicas = replicas
                .as_deref()
                .map(reassign::parse_replicas)
                .transpose()?;
            let r = reassign::Reassign {
                topic,
                partition,
                replicas,
            };
            print!("{}", reassign::run(&bootstrap, &r)?);
            Ok(())
        }
        ClusterCommand::Reassignments {
            topic,
            partitions,
            json,
            bootstrap,
        } => {
            let ongoing = reassign::list(&bootstrap, topic.as_deref(), &partitions)?;
            if json {
                println!("{}", serde_json::to_string(&ongoing)?);
            } else {
                print!("{}", reassign::render(&ongoing));
            }
            Ok(())
        }
        ClusterCommand::ElectLeaders {
            partitions,
            unclean,
            bootstrap,
            ..
        } if !partitions.is_empty() => {
            print!("{}", elect::run(&bootstrap, &partitions, unclean)?);
            Ok(())
        }
        ClusterCommand::ElectLeaders { admin, .. } => {
            let body = request(&admin, "POST", "/cluster/elect-leaders")?;
            let v: Value = serde_json::from_str(&body).context("the elect-leaders answer")?;
            println!(
                "partitions not led by their preferred replica: {} before, {} after (metadata offset {})",
                v["not_preferred_before"], v["not_preferred_after"], v["metadata_offset"]
            );
            Ok(())
        }
    }
}

/// `ID@HOST:PORT` as the id and `HOST:PORT` (checked, so the request names the
/// mistake before anything is sent).
fn parse_controller(s: &str) -> Result<(u64, String)> {
    let (id, address) = s
        .split_once('@')
        .ok_or_else(|| anyhow!("{s:?} is not ID@HOST:PORT"))?;
    let id: u64 =
        id.parse().ok().filter(|id| *id >= 1).ok_or_else(|| {
            anyhow!("{s:?}: controller id {id:?} is not an integer of at least 1")
        })?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{s:?}: {address:?} is not HOST:PORT"))?;
    if host.is_empty() || host.contains(['&', '?', ' ', '#']) {
        bail!("{s:?}: bad host {host:?}");
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow!("{s:?}: {port:?} is not a port (1-65535)"))?;
    Ok((id, address.to_string()))
}

fn print_membership(what: &str, body: &str) -> Result<()> {
    let v: Value = serde_json::from_str(body).context("the membership answer")?;
    println!(
        "{what}; voters now {} (metadata offset {})",
        list(&v["voters"]),
        v["metadata_offset"]
    );
    Ok(())
}

/// One request to the admin endpoint (elect-leaders and membership changes wait for the
/// controller, so the answer may take up to `REQUEST_TIMEOUT`).
fn request(admin: &str, method: &str, path: &str) -> Result<String> {
    crate::admin_client::call(admin, method, path, REQUEST_TIMEOUT)
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(a) if a.is_empty() => "none".to_string(),
        Some(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(" "),
        None => "?".to_string(),
    }
}

/// The `/cluster` JSON as text.
pub fn render_status(v: &Value) -> String {
    let c = &v["controller"];
    let leader = c["leader"]
        .as_u64()
        .map_or("none".to_string(), |l| l.to_string());
    let mut out = format!(
        "controller leader {leader}, term {}, commit index {} (voters {}; as seen by node {})\n",
        c["term"],
        c["commit_index"],
        list(&c["voters"]),
        v["node_id"]
    );
    if c["learners"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push_str(&format!(
            "controller learners (no vote): {}\n",
            list(&c["learners"])
        ));
    }
    if let Some(addresses) = c["addresses"].as_object().filter(|a| !a.is_empty()) {
        let known: Vec<String> = addresses
            .iter()
            .map(|(id, a)| format!("{id}={}", a.as_str().unwrap_or("?")))
            .collect();
        out.push_str(&format!("controller addresses: {}\n", known.join(" ")));
    }
    out.push_str(&format!(
        "metadata offset {}, {} topics, {} partitions\n\nbrokers:\n",
        v["metadata_offset"], v["topics"], v["partitions"]
    ));
    out.push_str(&format!(
        "  {:>4}  {:<12} {:<8} {:>7}  {}\n",
        "ID", "RACK", "STATE", "LEADS", "ADDRESS"
    ));
    for b in v["brokers"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let id = b["id"].as_i64().unwrap_or(-1);
        let leads = v["leaders_per_broker"][id.to_string()]
            .as_u64()
            .unwrap_or(0);
        let state = if b["fenced"] == true {
            "fenced"
        } else {
            "active"
        };
        out.push_str(&format!(
            "  {:>4}  {:<12} {:<8} {:>7}  {}:{}\n",
            id,
            b["rack"].as_str().unwrap_or("-"),
            state,
            leads,
            b["host"].as_str().unwrap_or("?"),
            b["port"]
        ));
    }
    let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "\nunder-replicated partitions ({}): {}\n",
        count("under_replicated"),
        list(&v["under_replicated"]),
    ));
    for p in details(&v["under_replicated_partitions"]) {
        out.push_str(&format!(
            "  {}  leader {}  isr {}  missing {}\n",
            p["partition"].as_str().unwrap_or("?"),
            p["leader"]
                .as_i64()
                .map_or("none".to_string(), |l| l.to_string()),
            list(&p["isr"]),
            list(&p["missing"]),
        ));
    }
    out.push_str(&format!(
        "offline partitions ({}): {}\n",
        count("offline"),
        list(&v["offline"])
    ));
    for p in details(&v["offline_partitions"]) {
        out.push_str(&format!(
            "  {}  {}  (isr {}; elr {})\n",
            p["partition"].as_str().unwrap_or("?"),
            waiting(p),
            list(&p["isr"]),
            list(&p["elr"]),
        ));
    }
    out
}

fn details(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// What an offline partition waits for, in words.
fn waiting(p: &Value) -> String {
    let brokers = details(&p["waits_for"]);
    let unclean = if p["unclean_election"] == true {
        " (or any replica: unclean election is enabled)"
    } else {
        ""
    };
    match brokers {
        [] => format!("waits for no broker that holds all committed data{unclean}"),
        [one] => format!("waits for broker {one}{unclean}"),
        _ => format!(
            "waits for any of brokers {}{unclean}",
            list(&p["waits_for"])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_arguments_are_checked() {
        assert_eq!(
            parse_controller("4@10.0.0.4:9093").unwrap(),
            (4, "10.0.0.4:9093".to_string())
        );
        for bad in ["4", "x@h:1", "0@h:1", "4@h", "4@h:0", "4@:9093", "4@h&x:1"] {
            assert!(parse_controller(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_renders_every_part() {
        let v: Value = serde_json::from_str(
            r#"{"node_id":2,"broker_state":"active","controller":{"leader":1,"term":4,"commit_index":57,"applied_index":57,"voters":[1,2,3],"learners":[5],"seen_by":2,"addresses":{"1":"h1:9093","4":"h4:9093"}},
            "metadata_offset":57,"brokers":[{"id":1,"epoch":3,"rack":"r1","fenced":false,"host":"h1","port":9092},{"id":3,"epoch":9,"rack":null,"fenced":true,"host":"h3","port":9094}],
            "topics":1,"partitions":2,"leaders_per_broker":{"1":2},"under_replicated":["t-0"],"offline":[],
            "under_replicated_partitions":[{"partition":"t-0","leader":1,"isr":[1,2],"missing":[3]}],"offline_partitions":[]}"#,
        )
        .unwrap();
        let text = render_status(&v);
        assert!(
            text.contains("controller leader 1, term 4, commit index 57"),
            "{text}"
        );
        assert!(text.contains("voters 1 2 3"), "{text}");
        assert!(text.contains("controller learners (no vote): 5"), "{text}");
        assert!(
            text.contains("controller addresses: 1=h1:9093 4=h4:9093"),
            "{text}"
        );
        assert!(text.contains("r1"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains(" 3 ") && l.contains("fenced")),
            "{text}"
        );
        assert!(
            text.contains("under-replicated partitions (1): t-0"),
            "{text}"
        );
        assert!(text.contains("offline partitions (0): none"), "{text}");
        assert!(
            text.contains("  t-0  leader 1  isr 1 2  missing 3\n"),
            "{text}"
        );
    }

    #[test]
    fn offline_partitions_say_which_brokers_they_wait_for() {
        let v: Value = serde_json::from_str(
            r#"{"node_id":1,"controller":{"leader":1,"voters":[1]},"brokers":[],
            "under_replicated":["t-1","t-2","t-3"],"offline":["t-1","t-2","t-3"],
            "under_replicated_partitions":[],
            "offline_partitions":[
              {"partition":"t-1","leader":null,"isr":[2],"elr":[],"waits_for":[2],"unclean_election":false},
              {"partition":"t-2","leader":null,"isr":[3],"elr":[1,2],"waits_for":[1,2,3],"unclean_election":false},
              {"partition":"t-3","leader":null,"isr":[],"elr":[],"waits_for":[],"unclean_election":true}]}"#,
        )
        .unwrap();
        let text = render_status(&v);
        assert!(
            text.contains("offline partitions (3): t-1 t-2 t-3"),
            "{text}"
        );
        assert!(
            text.contains("  t-1  waits for broker 2  (isr 2; elr none)"),
            "{text}"
        );
        assert!(
            text.contains("  t-2  waits for any of brokers 1 2 3  (isr 3; elr 1 2)"),
            "{text}"
        );
        assert!(
            text.contains("t-3  waits for no broker that holds all committed data (or any replica: unclean election is enabled)"),
            "{text}"
        );
    }
}
