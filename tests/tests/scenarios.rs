//! Replication scenarios on the deterministic simulator. Each reads as a specification.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use peerlite_proto::{
    Activity, Body, CollectionConfig, CollectionName, Conflict, DocId, DocumentError, Event,
    FilterContext, PassiveConfig, ReplicationError, ReplicatorType, Resolution, ValidationContext,
};
use peerlite_sim::{LinkId, PeerId, SimConfig, World};

const LIMIT: Duration = Duration::from_secs(3600);

fn dc() -> CollectionName {
    CollectionName::default()
}

fn id(s: &str) -> DocId {
    DocId::new(s).unwrap()
}

fn body_of(world: &World, peer: PeerId, doc: &str) -> Option<serde_json::Value> {
    world
        .db(peer)
        .get(&dc(), &id(doc))
        .unwrap()
        .map(|d| d.body.to_json())
}

fn hub_and_client(seed: u64) -> (World, PeerId, PeerId) {
    let mut w = World::new(seed, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    w.listen(hub, PassiveConfig::default());
    (w, hub, client)
}

fn one_shot(w: &mut World, link: LinkId) {
    w.start(link);
    w.run_until_quiet(LIMIT).unwrap();
    let status = w.status(link).clone();
    assert_eq!(status.activity, Activity::Stopped, "{status:?}");
    assert_eq!(status.error, None);
}

/// Every document event a link reported.
fn doc_events(w: &World, link: LinkId) -> Vec<peerlite_proto::DocumentEvent> {
    w.events(link)
        .iter()
        .filter_map(|e| match e {
            Event::Documents(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn revisions_in(w: &mut World, f: impl FnOnce(&mut World)) -> u64 {
    let before = w.stats().revisions_transferred;
    f(w);
    w.stats().revisions_transferred - before
}

#[test]
fn one_shot_push_then_resync_sends_only_changes() {
    let (mut w, hub, client) = hub_and_client(1);
    for i in 0..500 {
        w.save(client, &format!("doc-{i:03}"), &format!(r#"{{"n": {i}}}"#))
            .unwrap();
    }
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, link)), 500);
    w.check_converged(&[hub, client]).unwrap();
    let progress = w.status(link).progress;
    assert_eq!((progress.completed, progress.total), (500, 500));

    // Nothing changed: nothing is sent.
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, link)), 0);
    // Seven documents changed (one deleted): exactly seven revisions are sent.
    for i in [3, 50, 77, 123, 300, 301] {
        w.save(client, &format!("doc-{i:03}"), r#"{"n": "changed"}"#)
            .unwrap();
    }
    w.delete(client, "doc-499").unwrap();
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, link)), 7);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(body_of(&w, hub, "doc-300").unwrap()["n"], "changed");
    assert_eq!(body_of(&w, hub, "doc-499"), None);
}

#[test]
fn pending_document_ids_follow_the_push_checkpoint() {
    let (mut w, hub, client) = hub_and_client(15);
    for i in 0..5 {
        w.save(
            client,
            &format!("d{i}"),
            &format!(r#"{{"public": {}}}"#, i % 2 == 0),
        )
        .unwrap();
    }
    let public = |ctx: &FilterContext<'_>| ctx.revision.body.to_json()["public"] == true;
    let link = w.replicate(client, hub, |c| {
        c.replicator_type = ReplicatorType::Push;
        c.collections[0].push_filter = Some(Arc::new(public));
    });
    assert_eq!(
        w.pending_document_ids(link).unwrap(),
        vec!["d0", "d2", "d4"]
    );
    one_shot(&mut w, link);
    assert!(w.pending_document_ids(link).unwrap().is_empty());
    w.save(client, "d2", r#"{"public": true, "edited": 1}"#)
        .unwrap();
    w.save(client, "d3", r#"{"public": false, "edited": 1}"#)
        .unwrap();
    assert_eq!(w.pending_document_ids(link).unwrap(), vec!["d2"]);
    assert!(
        w.db(client)
            .is_document_pending(&w_config(&w, link), &dc(), &id("d2"))
            .unwrap()
    );
    // A pull-only replication never has pending pushes.
    let pull = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Pull);
    assert!(w.pending_document_ids(pull).unwrap().is_empty());
}

fn w_config(w: &World, link: LinkId) -> peerlite_proto::ReplicatorConfig {
    w.replicator_config(link).clone()
}

#[test]
fn one_shot_pull_and_document_events() {
    let (mut w, hub, client) = hub_and_client(2);
    for i in 0..300 {
        w.save(hub, &format!("d{i}"), r#"{"from": "hub"}"#).unwrap();
    }
    w.delete(hub, "d7").unwrap();
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Pull);
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();
    let pulled: Vec<_> = doc_events(&w, link).into_iter().collect();
    assert_eq!(pulled.len(), 300);
    assert!(pulled.iter().all(|d| d.error.is_none()));
    assert!(pulled.iter().any(|d| d.doc_id == id("d7") && d.deleted));
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, link)), 0);
}

#[test]
fn push_and_pull_resolves_conflicts_with_the_default_rule() {
    let (mut w, hub, client) = hub_and_client(3);
    w.save(hub, "shared", r#"{"v": 0}"#).unwrap();
    w.save(hub, "gone", r#"{"v": 0}"#).unwrap();
    let link = w.replicate(client, hub, |_| {});
    one_shot(&mut w, link);
    // Concurrent edits: the hub edits twice (longer history), the client once.
    w.save(hub, "shared", r#"{"v": "hub-1"}"#).unwrap();
    w.save(hub, "shared", r#"{"v": "hub-2"}"#).unwrap();
    w.save(client, "shared", r#"{"v": "client"}"#).unwrap();
    // A deletion beats an edit, even a longer one.
    w.delete(client, "gone").unwrap();
    w.save(hub, "gone", r#"{"v": 1}"#).unwrap();
    w.save(hub, "gone", r#"{"v": 2}"#).unwrap();
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(body_of(&w, client, "shared").unwrap()["v"], "hub-2");
    assert_eq!(body_of(&w, client, "gone"), None);
    assert_eq!(body_of(&w, hub, "gone"), None);
    // Everything the hub accepted is still in the history of the converged revisions.
    w.check_acknowledged_kept(hub, &[hub, client]).unwrap();
    let doc = w.db(client).get(&dc(), &id("shared")).unwrap().unwrap();
    assert!(!doc.conflicted);
    // Both conflicts were reported as resolved to the application.
    let resolved: Vec<String> = doc_events(&w, link)
        .into_iter()
        .filter(|d| d.conflict_resolved)
        .map(|d| d.doc_id.to_string())
        .collect();
    let mut resolved = resolved;
    resolved.sort();
    assert_eq!(resolved, vec!["gone", "shared"]);
}

#[test]
fn custom_resolver_merges_and_the_merge_replicates() {
    let (mut w, hub, client) = hub_and_client(4);
    w.save(hub, "cart", r#"{"items": ["apple"]}"#).unwrap();
    let merge = |c: &Conflict<'_>| {
        let mut items: Vec<String> = Vec::new();
        for side in [c.local.body(), c.remote.body()] {
            for item in side.to_json()["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let s = item.as_str().unwrap_or_default().to_owned();
                if !items.contains(&s) {
                    items.push(s);
                }
            }
        }
        items.sort();
        Resolution::Merged(Body::from_json(&serde_json::json!({ "items": items })).unwrap())
    };
    let link = w.replicate(client, hub, |c| {
        c.collections[0].conflict_resolver = Some(Arc::new(merge));
    });
    one_shot(&mut w, link);
    w.save(hub, "cart", r#"{"items": ["apple", "bread"]}"#)
        .unwrap();
    w.save(client, "cart", r#"{"items": ["apple", "milk"]}"#)
        .unwrap();
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(
        body_of(&w, hub, "cart").unwrap(),
        serde_json::json!({"items": ["apple", "bread", "milk"]})
    );
}

#[test]
fn continuous_replication_follows_writes_on_both_sides() {
    let (mut w, hub, client) = hub_and_client(5);
    let link = w.replicate(client, hub, |c| c.continuous = true);
    w.start(link);
    w.run_until_quiet(LIMIT).unwrap();
    assert_eq!(w.status(link).activity, Activity::Idle);
    for round in 0..20 {
        w.save(client, &format!("c{round}"), r#"{"side": "client"}"#)
            .unwrap();
        w.save(hub, &format!("h{round}"), r#"{"side": "hub"}"#)
            .unwrap();
        w.run_for(Duration::from_millis(3));
    }
    w.run_until_quiet(LIMIT).unwrap();
    assert_eq!(w.status(link).activity, Activity::Idle);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(
        w.db(client)
            .changes(&dc(), Default::default(), 1000)
            .unwrap()
            .len(),
        40
    );
    w.stop(link);
    assert_eq!(w.status(link).activity, Activity::Stopped);
}

#[test]
fn dropped_connections_and_partitions_heal() {
    let (mut w, hub, client) = hub_and_client(6);
    for i in 0..1000 {
        w.save(client, &format!("doc-{i}"), r#"{"x": 1}"#).unwrap();
    }
    let link = w.replicate(client, hub, |c| {
        c.continuous = true;
        c.initial_retry_wait = Duration::from_millis(50);
    });
    w.start(link);
    w.run_for(Duration::from_millis(20));
    w.drop_connection(link);
    w.run_for(Duration::from_millis(100));
    w.partition(link);
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.status(link).activity, Activity::Offline);
    assert!(matches!(
        w.status(link).error,
        Some(ReplicationError::Transport { .. })
    ));
    w.heal(link);
    w.run_until_quiet(LIMIT).unwrap();
    assert_eq!(w.status(link).activity, Activity::Idle);
    assert_eq!(w.status(link).error, None);
    w.check_converged(&[hub, client]).unwrap();
    assert!(w.stats().connections >= 3);
}

#[test]
fn hub_crash_mid_sync_loses_nothing_acknowledged() {
    let (mut w, hub, client) = hub_and_client(7);
    for i in 0..2000 {
        w.save(client, &format!("doc-{i}"), &format!(r#"{{"n": {i}}}"#))
            .unwrap();
    }
    let link = w.replicate(client, hub, |c| {
        c.continuous = true;
        c.initial_retry_wait = Duration::from_millis(10);
    });
    w.start(link);
    w.run_for(Duration::from_millis(30));
    w.crash(hub);
    w.run_for(Duration::from_millis(30));
    w.crash(client);
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&[hub, client]).unwrap();
    w.check_acknowledged_kept(hub, &[hub, client]).unwrap();
    assert_eq!(
        w.db(hub)
            .changes(&dc(), Default::default(), 5000)
            .unwrap()
            .len(),
        2000
    );
}

#[test]
fn chain_and_ring_topologies_converge() {
    // a -> b -> c: b listens for a and replicates to c.
    let mut w = World::new(8, SimConfig::default());
    let (a, b, c) = (w.add_peer("a"), w.add_peer("b"), w.add_peer("c"));
    w.listen(b, PassiveConfig::default());
    w.listen(c, PassiveConfig::default());
    let ab = w.replicate(a, b, |cfg| cfg.continuous = true);
    let bc = w.replicate(b, c, |cfg| cfg.continuous = true);
    w.start(ab);
    w.start(bc);
    for i in 0..50 {
        let p = [a, b, c][i % 3];
        w.save(p, &format!("k{}", i % 7), &format!(r#"{{"i": {i}}}"#))
            .unwrap();
        w.run_for(Duration::from_millis(1));
    }
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&[a, b, c]).unwrap();

    // A ring of four listeners, each replicating to the next.
    let mut w = World::new(9, SimConfig::default());
    let peers: Vec<PeerId> = (0..4).map(|i| w.add_peer(&format!("p{i}"))).collect();
    for p in &peers {
        w.listen(*p, PassiveConfig::default());
    }
    let links: Vec<LinkId> = (0..4)
        .map(|i| w.replicate(peers[i], peers[(i + 1) % 4], |cfg| cfg.continuous = true))
        .collect();
    for l in &links {
        w.start(*l);
    }
    for i in 0..80 {
        let p = peers[i % 4];
        if i % 11 == 0 {
            w.delete(p, &format!("k{}", i % 5)).unwrap();
        } else {
            w.save(p, &format!("k{}", i % 5), &format!(r#"{{"i": {i}}}"#))
                .unwrap();
        }
        w.run_for(Duration::from_micros(700));
    }
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&peers).unwrap();
}

#[test]
fn read_only_listener_refuses_push_but_serves_pull() {
    let mut w = World::new(10, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    w.listen(
        hub,
        PassiveConfig {
            read_only: true,
            ..PassiveConfig::default()
        },
    );
    w.save(hub, "h", r#"{"x": 1}"#).unwrap();
    w.save(client, "c", r#"{"x": 2}"#).unwrap();
    let push = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    w.start(push);
    w.run_until_quiet(LIMIT).unwrap();
    let status = w.status(push).clone();
    assert_eq!(status.activity, Activity::Stopped);
    match status.error {
        Some(e @ ReplicationError::ReadOnly(_)) => {
            assert!(
                e.to_string()
                    .starts_with("this listener is read-only: sync with pull only"),
                "{e}"
            )
        }
        other => panic!("expected a read-only refusal, got {other:?}"),
    }
    assert_eq!(body_of(&w, hub, "c"), None);
    let pull = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Pull);
    one_shot(&mut w, pull);
    assert_eq!(body_of(&w, client, "h").unwrap()["x"], 1);
}

#[test]
fn validator_rejections_reach_the_pusher() {
    let mut w = World::new(11, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    let require_title = |ctx: &ValidationContext<'_>| {
        if ctx.revision.deleted || ctx.revision.body.to_json().get("title").is_some() {
            Ok(())
        } else {
            Err("documents need a title".to_string())
        }
    };
    w.listen(
        hub,
        PassiveConfig {
            validator: Some(Arc::new(require_title)),
            ..PassiveConfig::default()
        },
    );
    w.save(client, "good", r#"{"title": "ok"}"#).unwrap();
    w.save(client, "bad", r#"{"oops": true}"#).unwrap();
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    one_shot(&mut w, link);
    assert!(body_of(&w, hub, "good").is_some());
    assert_eq!(body_of(&w, hub, "bad"), None);
    let rejected: Vec<_> = doc_events(&w, link)
        .into_iter()
        .filter(|d| d.error.is_some())
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].doc_id, id("bad"));
    assert_eq!(
        rejected[0].error,
        Some(DocumentError::Rejected {
            code: 403,
            reason: "documents need a title".into()
        })
    );
}

#[test]
fn filters_select_what_replicates() {
    let (mut w, hub, client) = hub_and_client(12);
    for i in 0..10 {
        let public = i % 2 == 0;
        w.save(
            client,
            &format!("c{i}"),
            &format!(r#"{{"public": {public}}}"#),
        )
        .unwrap();
        w.save(hub, &format!("h{i}"), &format!(r#"{{"public": {public}}}"#))
            .unwrap();
    }
    let only_public = |ctx: &FilterContext<'_>| ctx.revision.body.to_json()["public"] == true;
    let link = w.replicate(client, hub, |c| {
        let mut col = CollectionConfig::new(dc());
        col.push_filter = Some(Arc::new(only_public));
        col.pull_filter = Some(Arc::new(only_public));
        col.filter_name = Some("public".into());
        c.collections = vec![col];
    });
    one_shot(&mut w, link);
    for i in 0..10 {
        let expect = i % 2 == 0;
        assert_eq!(body_of(&w, hub, &format!("c{i}")).is_some(), expect, "c{i}");
        assert_eq!(
            body_of(&w, client, &format!("h{i}")).is_some(),
            expect,
            "h{i}"
        );
    }
    // Document-ID filter.
    let only = w.replicate(client, hub, |c| {
        c.collections[0].doc_ids = Some(vec![id("c1"), id("c3")]);
        c.replicator_type = ReplicatorType::Push;
    });
    one_shot(&mut w, only);
    assert!(body_of(&w, hub, "c1").is_some() && body_of(&w, hub, "c3").is_some());
    assert_eq!(body_of(&w, hub, "c5"), None);
}

#[test]
fn gives_up_after_max_attempts_and_continuous_keeps_trying() {
    let mut w = World::new(13, SimConfig::default());
    let nobody = w.add_peer("nobody"); // never listens
    let client = w.add_peer("client");
    let link = w.replicate(client, nobody, |c| {
        c.max_attempts = 4;
        c.initial_retry_wait = Duration::from_millis(100);
        c.max_attempt_wait = Duration::from_millis(250);
    });
    w.start(link);
    w.run_until_quiet(LIMIT).unwrap();
    let status = w.status(link).clone();
    assert_eq!(status.activity, Activity::Stopped);
    assert!(
        matches!(
            status.error,
            Some(ReplicationError::GaveUp { attempts: 4, .. })
        ),
        "{status:?}"
    );
    // Waits were 100, 200, 250 ms (capped).
    let elapsed = w.elapsed();
    assert!(
        elapsed >= Duration::from_millis(550) && elapsed < Duration::from_millis(700),
        "{elapsed:?}"
    );

    let forever = w.replicate(client, nobody, |c| {
        c.continuous = true;
        c.initial_retry_wait = Duration::from_millis(100);
        c.max_attempt_wait = Duration::from_secs(2);
    });
    w.start(forever);
    w.run_for(Duration::from_secs(60));
    assert_eq!(w.status(forever).activity, Activity::Offline);
    w.listen(nobody, PassiveConfig::default());
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.status(forever).activity, Activity::Idle);
}

#[test]
fn reset_checkpoint_replays_everything() {
    let (mut w, hub, client) = hub_and_client(14);
    for i in 0..40 {
        w.save(client, &format!("d{i}"), "{}").unwrap();
    }
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    one_shot(&mut w, link);
    // The hub loses its copy of a document; a normal sync does not notice...
    w.db(hub).purge(&dc(), &id("d5")).unwrap();
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, link)), 0);
    // ...a reset sync proposes everything again and restores it.
    let sent = revisions_in(&mut w, |w| {
        w.start_with_reset(link);
        w.run_until_quiet(LIMIT).unwrap();
    });
    assert_eq!(sent, 1);
    assert!(body_of(&w, hub, "d5").is_some());
}

#[test]
fn several_collections_replicate_independently() {
    let mut w = World::new(16, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    let tasks: CollectionName = "app.tasks".parse().unwrap();
    let notes: CollectionName = "app.notes".parse().unwrap();
    let private: CollectionName = "app.private".parse().unwrap();
    w.listen(
        hub,
        PassiveConfig {
            collections: vec![tasks.clone(), notes.clone()],
            ..PassiveConfig::default()
        },
    );
    w.save_in(client, &tasks, "t1", r#"{"task": 1}"#).unwrap();
    w.save_in(hub, &notes, "n1", r#"{"note": 1}"#).unwrap();
    w.save_in(client, &private, "p1", r#"{"secret": 1}"#)
        .unwrap();
    let link = w.replicate(client, hub, |c| {
        c.collections = vec![
            CollectionConfig::new(tasks.clone()),
            CollectionConfig::new(notes.clone()),
        ];
    });
    one_shot(&mut w, link);
    assert!(w.db(hub).get(&tasks, &id("t1")).unwrap().is_some());
    assert!(w.db(client).get(&notes, &id("n1")).unwrap().is_some());
    assert!(!w.db(hub).has_collection(&private).unwrap());
    // Asking for a collection the listener does not serve is refused up front.
    let bad = w.replicate(client, hub, |c| {
        c.collections = vec![CollectionConfig::new(private.clone())]
    });
    w.start(bad);
    w.run_until_quiet(LIMIT).unwrap();
    match &w.status(bad).error {
        Some(ReplicationError::Remote(e)) => assert_eq!(e.code, 404),
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[test]
fn reconnect_storm_converges_without_duplicates() {
    let (mut w, hub, client) = hub_and_client(17);
    for i in 0..3000 {
        w.save(client, &format!("doc-{i:04}"), r#"{"x": 1}"#)
            .unwrap();
    }
    let link = w.replicate(client, hub, |c| {
        c.continuous = true;
        c.initial_retry_wait = Duration::from_millis(1);
        c.max_attempt_wait = Duration::from_millis(5);
    });
    w.start(link);
    // Drop the connection every few milliseconds, a hundred times.
    let mut rounds = 0;
    while w.stats().dropped_connections < 100 && rounds < 100_000 {
        w.run_for(Duration::from_millis(3));
        w.drop_connection(link);
        rounds += 1;
    }
    w.run_until_quiet(LIMIT).unwrap();
    w.check_converged(&[hub, client]).unwrap();
    let feed = w
        .db(hub)
        .changes(&dc(), Default::default(), 10_000)
        .unwrap();
    assert_eq!(feed.len(), 3000);
    // Every document holds exactly its one revision: nothing applied twice.
    assert!(feed.iter().all(|c| c.rev.generation() == 1));
    assert_eq!(w.stats().dropped_connections, 100);
}

#[test]
fn long_edit_streaks_connect_to_what_the_peer_has() {
    // Found by the convergence fuzzer: more edits than the default history length (20)
    // made a pushed revision's history stop short of the peer's revision: a false
    // conflict, refused forever. The receiver now says which revisions it has.
    let (mut w, hub, client) = hub_and_client(18);
    w.save(hub, "doc", r#"{"v": 0}"#).unwrap();
    let link = w.replicate(client, hub, |_| {});
    one_shot(&mut w, link);
    for v in 1..=30 {
        w.save(client, "doc", &format!(r#"{{"v": {v}}}"#)).unwrap();
    }
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(body_of(&w, hub, "doc").unwrap()["v"], 30);
    for v in 31..=60 {
        w.save(hub, "doc", &format!(r#"{{"v": {v}}}"#)).unwrap();
    }
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(body_of(&w, client, "doc").unwrap()["v"], 60);
    let trouble: Vec<_> = doc_events(&w, link)
        .into_iter()
        .filter(|d| d.error.is_some() || d.conflict_resolved)
        .collect();
    assert!(
        trouble.is_empty(),
        "no conflict should have happened: {trouble:?}"
    );
}

#[test]
fn a_live_change_takes_one_round_trip_and_is_not_echoed_back() {
    // Requests delivered, by kind, until all is quiet after one write on `writer`
    // (checkpoint saves left out).
    fn requests_for_one_write(
        w: &mut World,
        writer: PeerId,
        doc: &str,
    ) -> Vec<(&'static str, u64)> {
        let before = w.stats().requests.clone();
        w.save(writer, doc, r#"{"live": true}"#).unwrap();
        w.run_until_quiet(LIMIT).unwrap();
        w.stats()
            .requests
            .iter()
            .map(|(k, n)| (*k, n - before.get(k).copied().unwrap_or(0)))
            .filter(|(k, n)| *n > 0 && *k != "SetCheckpoint")
            .collect()
    }
    for direct in [8, 0] {
        let (mut w, hub, client) = hub_and_client(31);
        let link = w.replicate(client, hub, |c| {
            c.continuous = true;
            c.push_without_proposal = direct;
        });
        w.start(link);
        w.run_until_quiet(LIMIT).unwrap();
        // Pushed: the revision goes at once, or after a proposal when that is turned
        // off. The hub does not announce it back to the client.
        let pushed = requests_for_one_write(&mut w, client, "from-client");
        if direct > 0 {
            assert_eq!(pushed, [("Revs", 1)]);
        } else {
            assert_eq!(pushed, [("ProposeChanges", 1), ("Revs", 1)]);
        }
        // Pulled: announced, then sent; the client does not push it back.
        assert_eq!(
            requests_for_one_write(&mut w, hub, "from-hub"),
            [("Changes", 1), ("Changes (caught up)", 1), ("Revs", 1)]
        );
        w.check_converged(&[hub, client]).unwrap();
        assert_eq!(body_of(&w, hub, "from-client").unwrap()["live"], true);
        // A local edit of a pulled document is pushed as usual.
        w.save(client, "from-hub", r#"{"live": "edited"}"#).unwrap();
        w.run_until_quiet(LIMIT).unwrap();
        assert_eq!(body_of(&w, hub, "from-hub").unwrap()["live"], "edited");
        w.check_converged(&[hub, client]).unwrap();
    }
}

#[test]
fn a_direct_push_reaches_a_peer_far_behind() {
    // Sent without a proposal, a revision carries `max_history` ancestors; a peer whose
    // revision is older than that answers Conflict, and the revision goes again with
    // history reaching it: no conflict is reported and both converge.
    let (mut w, hub, client) = hub_and_client(32);
    w.save(hub, "doc", r#"{"v": 0}"#).unwrap();
    let link = w.replicate(client, hub, |c| c.max_history = 5);
    one_shot(&mut w, link);
    for v in 1..=12 {
        w.save(client, "doc", &format!(r#"{{"v": {v}}}"#)).unwrap();
    }
    let revs_before = w.stats().requests.get("Revs").copied().unwrap_or(0);
    one_shot(&mut w, link);
    assert_eq!(
        w.stats().requests.get("Revs").copied().unwrap_or(0) - revs_before,
        2
    );
    assert_eq!(w.stats().requests.get("ProposeChanges"), None);
    w.check_converged(&[hub, client]).unwrap();
    assert_eq!(body_of(&w, hub, "doc").unwrap()["v"], 12);
    let trouble: Vec<_> = doc_events(&w, link)
        .into_iter()
        .filter(|d| d.error.is_some() || d.conflict_resolved)
        .collect();
    assert!(trouble.is_empty(), "{trouble:?}");
}

/// A change travels while its sync runs (replication hears of it as soon as it is
/// readable). If the writer then crashes before the sync ends, the change is gone there
/// but already stored by the peer, which also holds a checkpoint past it; the writer
/// reuses the change's sequence for its next write. That write still reaches the peer
/// (the earlier of the two checkpoint copies wins), the lost change comes back from the
/// peer, and both converge.
#[test]
fn a_change_sent_before_its_sync_and_lost_in_a_crash_skips_nothing() {
    let config = SimConfig {
        latency: (Duration::from_micros(100), Duration::from_micros(100)),
        storage_delay: (Duration::from_micros(10), Duration::from_micros(10)),
        sync_delay: (Duration::from_micros(50), Duration::from_micros(50)),
        ..SimConfig::default()
    };
    let mut w = World::new(11, config);
    let hub = w.add_peer("hub");
    let phone = w.add_peer("phone");
    w.listen(hub, PassiveConfig::default());
    // The phone's disk is slow: its syncs take 50 ms.
    w.set_sync_delay(
        phone,
        (Duration::from_millis(50), Duration::from_millis(50)),
    );
    let link = w.replicate(phone, hub, |c| {
        c.continuous = true;
        c.checkpoint_interval = Duration::from_millis(1);
        c.initial_retry_wait = Duration::from_millis(5);
    });
    w.start(link);
    w.run_until_quiet(LIMIT).unwrap();
    let seq_before = w.db(phone).last_sequence(&dc()).unwrap();

    w.save(phone, "lost", r#"{"v": "sent before its sync"}"#)
        .unwrap();
    w.run_for(Duration::from_millis(20));
    assert!(
        body_of(&w, hub, "lost").is_some(),
        "the hub stored the change while the phone's sync ran"
    );
    assert!(
        w.acknowledged(phone)
            .iter()
            .all(|(d, _)| d.as_str() != "lost"),
        "the phone's save has not returned yet"
    );
    w.crash(phone);
    assert_eq!(
        w.stats().unsynced_writes_lost,
        2,
        "the save and a checkpoint write"
    );
    assert_eq!(body_of(&w, phone, "lost"), None, "lost on the phone");

    w.save(phone, "next", r#"{"v": "reuses the sequence"}"#)
        .unwrap();
    assert_eq!(
        w.db(phone).last_sequence(&dc()).unwrap(),
        seq_before.next(),
        "the lost change's sequence is reused"
    );
    w.run_until_quiet(LIMIT).unwrap();
    assert!(
        body_of(&w, hub, "next").is_some(),
        "the write that reused the sequence was not skipped"
    );
    assert!(
        body_of(&w, phone, "lost").is_some(),
        "the change the hub kept came back"
    );
    w.check_converged(&[hub, phone]).unwrap();
    w.check_acknowledged_kept(phone, &[hub, phone]).unwrap();
    w.check_acknowledged_kept(hub, &[hub, phone]).unwrap();
}

/// A body of about `kib` KiB.
fn padded(kib: usize) -> String {
    format!(r#"{{"pad": "{}"}}"#, "z".repeat(kib << 10))
}

/// Documents near a peer's frame limit sync in one one-shot sync, both ways: messages are
/// cut by bytes as well as by count. A document that cannot fit in any message the
/// receiver accepts is reported once, per document, and the sync ends without a retry.
#[test]
fn documents_near_the_frame_limit_sync_and_larger_ones_are_reported() {
    let limit = 256 << 10;
    let small = peerlite_proto::FrameLimits {
        max_frame_bytes: limit,
        ..peerlite_proto::FrameLimits::DEFAULT
    };
    let mut w = World::new(23, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    w.listen(
        hub,
        PassiveConfig {
            frame_limits: small,
            ..PassiveConfig::default()
        },
    );
    for (peer, side) in [(client, "up"), (hub, "down")] {
        for i in 0..6 {
            w.save(peer, &format!("{side}-near-{i}"), &padded(240))
                .unwrap();
        }
        for i in 0..40 {
            w.save(peer, &format!("{side}-mid-{i}"), &padded(20))
                .unwrap();
        }
        w.save(peer, &format!("{side}-huge"), &padded(300)).unwrap();
    }
    let link = w.replicate(client, hub, |c| c.frame_limits = small);
    one_shot(&mut w, link);
    assert_eq!(w.stats().connections, 1, "the sync was retried");
    for side in ["up", "down"] {
        for doc in (0..6)
            .map(|i| format!("{side}-near-{i}"))
            .chain((0..40).map(|i| format!("{side}-mid-{i}")))
        {
            assert!(body_of(&w, hub, &doc).is_some(), "{doc} missing on the hub");
            assert!(
                body_of(&w, client, &doc).is_some(),
                "{doc} missing on the client"
            );
        }
    }
    assert_eq!(body_of(&w, hub, "up-huge"), None);
    assert_eq!(body_of(&w, client, "down-huge"), None);
    let mut failed: Vec<_> = doc_events(&w, link)
        .into_iter()
        .filter(|d| d.error.is_some())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    failed.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
    for (event, doc) in failed.iter().zip(["down-huge", "up-huge"]) {
        assert_eq!(event.doc_id, id(doc));
        match event.error {
            Some(DocumentError::TooLarge { bytes, limit: l }) => {
                assert!(bytes > limit as u64 && l == limit as u64, "{event:?}")
            }
            ref other => panic!("{doc}: {other:?}"),
        }
    }
    // Nothing is retried: the next sync moves nothing and reports nothing.
    let again = w.replicate(client, hub, |c| c.frame_limits = small);
    assert_eq!(revisions_in(&mut w, |w| one_shot(w, again)), 0);
    assert!(doc_events(&w, again).is_empty());
}

/// Progress counts the current connection's work: a one-shot sync whose connection drops
/// midway ends with every document it counted completed, and never more documents than
/// there are (it counted 90 for 6 while it retried, before).
#[test]
fn progress_after_a_reconnection_counts_each_document_once() {
    let (mut w, hub, client) = hub_and_client(31);
    for i in 0..1000 {
        w.save(client, &format!("doc-{i}"), r#"{"x": 1}"#).unwrap();
    }
    let link = w.replicate(client, hub, |c| {
        c.replicator_type = ReplicatorType::Push;
        c.initial_retry_wait = Duration::from_millis(50);
        c.checkpoint_interval = Duration::from_millis(1);
    });
    w.start(link);
    w.run_for(Duration::from_millis(30));
    let before = w.status(link).progress;
    assert!(
        before.completed > 0 && before.completed < 1000,
        "{before:?}"
    );
    w.drop_connection(link);
    w.run_until_quiet(LIMIT).unwrap();
    let status = w.status(link).clone();
    assert_eq!((status.activity, status.error), (Activity::Stopped, None));
    let p = status.progress;
    assert_eq!(p.completed, p.total, "{p:?}");
    assert!(p.total > 0 && p.total <= 1000, "{p:?}");
    w.check_converged(&[hub, client]).unwrap();
    // The retry was announced while it was pending.
    assert!(
        w.events(link).iter().any(|e| matches!(
            e,
            Event::Status(s) if s.retry.is_some_and(|r| r.failed_attempts == 1)
                && s.activity == Activity::Offline
        )),
        "no status announced the retry"
    );
}

/// A validator's reason is cut at 1 KiB, so the answer to a whole `Revs` message stays
/// small: 100 rejections with 200 KiB reasons would make a 20 MB frame otherwise.
#[test]
fn long_rejection_reasons_are_cut_and_the_push_completes() {
    let mut w = World::new(12, SimConfig::default());
    let hub = w.add_peer("hub");
    let client = w.add_peer("client");
    let wordy = |_: &ValidationContext<'_>| Err(format!("no: {}", "é".repeat(100 << 10)));
    w.listen(
        hub,
        PassiveConfig {
            validator: Some(Arc::new(wordy)),
            ..PassiveConfig::default()
        },
    );
    for i in 0..100 {
        w.save(client, &format!("d{i}"), "{}").unwrap();
    }
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    one_shot(&mut w, link);
    let rejected: Vec<_> = doc_events(&w, link)
        .into_iter()
        .filter_map(|d| match d.error {
            Some(DocumentError::Rejected { code: 403, reason }) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 100);
    assert!(
        rejected
            .iter()
            .all(|r| r.starts_with("no: é") && r.len() <= 1024 + 3)
    );
}

#[test]
fn a_recorded_replicator_replays_and_the_doctor_names_the_slow_peer_it_waited_for() {
    use peerlite_proto::record::{DiagnosisOptions, ReplayOutcome, Waiting};
    let (mut w, hub, client) = hub_and_client(31);
    for i in 0..300 {
        w.save(client, &format!("doc-{i}"), r#"{"x": 1}"#).unwrap();
    }
    // The hub takes 3 s to make anything durable, so it answers each Revs late.
    w.set_sync_delay(hub, (Duration::from_secs(3), Duration::from_secs(3)));
    let link = w.replicate(client, hub, |c| c.replicator_type = ReplicatorType::Push);
    w.record(link);
    one_shot(&mut w, link);
    w.check_converged(&[hub, client]).unwrap();

    // Written to a file and read back, as a field recording would be.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.rec");
    std::fs::write(&file, w.recording(link).unwrap()).unwrap();
    let replayed = peerlite_sim::replay_file(&file, DiagnosisOptions::default()).unwrap();
    assert!(
        matches!(replayed.outcome, ReplayOutcome::Identical { .. }),
        "{:?}",
        replayed.outcome
    );
    let report = &replayed.report;
    assert_eq!(report.documents_out, 300);
    assert_eq!(report.ended.as_deref(), Some("stopped"));
    assert!(report.waiting.is_empty(), "{:?}", report.waiting);
    let stall = report.stalls.first().expect("a stall");
    assert!(
        stall.to_nanos - stall.from_nanos >= 2_000_000_000,
        "{stall:?}"
    );
    assert!(
        stall
            .waiting_for
            .iter()
            .any(|w| matches!(w, Waiting::Answer { request, .. } if request == "Revs")),
        "{stall:?}"
    );
    // The same words `peerlite replay` prints.
    let text = report.to_string();
    assert!(text.contains("the peer's answer to Revs #"), "{text}");
}

#[test]
fn a_purged_document_comes_back_only_once_it_changes_on_the_peer_that_kept_it() {
    use peerlite_storage::Purged;
    let (mut w, hub, client) = hub_and_client(41);
    for i in 0..5 {
        w.save(hub, &format!("doc-{i}"), r#"{"v": 1}"#).unwrap();
    }
    let link = w.replicate(client, hub, |_| {});
    one_shot(&mut w, link);
    assert!(body_of(&w, client, "doc-1").is_some());
    // The documents pulled came after the push had read the client's changes: one more
    // sync takes its push checkpoint past them (the hub already has them; it sends back
    // nothing that matters). Until then, a copy purged on the hub would be pushed back.
    one_shot(&mut w, link);

    // Purged on each side: not deletions — nothing is sent for them, each peer keeps its
    // copy, and the next sync (its checkpoints past them) moves nothing.
    let purge = |w: &World, peer, ids: &[&str]| {
        let ids: Vec<DocId> = ids.iter().map(|s| id(s)).collect();
        w.db(peer).purge_documents(&dc(), &ids).unwrap()
    };
    assert_eq!(purge(&w, client, &["doc-1", "doc-2"]), Purged::All(2));
    assert_eq!(purge(&w, hub, &["doc-3"]), Purged::All(1));
    let before = w.stats().revisions_transferred;
    one_shot(&mut w, link);
    assert_eq!(w.stats().revisions_transferred, before, "nothing moved");
    assert_eq!(body_of(&w, client, "doc-1"), None);
    assert!(body_of(&w, hub, "doc-1").is_some());
    assert_eq!(body_of(&w, hub, "doc-3"), None);
    assert!(body_of(&w, client, "doc-3").is_some());

    // Once it changes where it was kept, it comes back, with its history.
    w.save(hub, "doc-1", r#"{"v": 2}"#).unwrap();
    w.save(client, "doc-3", r#"{"v": 2}"#).unwrap();
    one_shot(&mut w, link);
    assert_eq!(
        body_of(&w, client, "doc-1"),
        Some(serde_json::json!({"v": 2}))
    );
    assert_eq!(body_of(&w, hub, "doc-3"), Some(serde_json::json!({"v": 2})));
    assert_eq!(
        body_of(&w, client, "doc-2"),
        None,
        "unchanged: still not pulled"
    );

    // A replication started over with reset checkpoints sends everything again.
    w.start_with_reset(link);
    w.run_until_quiet(LIMIT).unwrap();
    assert!(body_of(&w, client, "doc-2").is_some());
    w.check_converged(&[hub, client]).unwrap();
}
