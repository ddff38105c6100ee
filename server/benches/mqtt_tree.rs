//! The broker's subscription trie: one message's matches as the number of
//! subscriptions that do NOT match it grows (a trie keeps that cost flat; a
//! scan would grow with it), and a fan-out to many subscribers of one
//! filter. `cargo bench -p sessionwire-server --bench mqtt_tree`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use sessionwire::mqtt::QoS;
use sessionwire_server::mqtt::tree::{Subscription, Tree, TreeLimits};

fn sub(qos: QoS) -> Subscription {
    Subscription::at(qos)
}

/// `clients` clients, each with `sensors/CLIENT/+` and `alerts/CLIENT/#`,
/// plus ten wildcard watchers (`sensors/+/temp`, `#`, ...).
fn sensors(clients: usize) -> Tree {
    let mut tree = Tree::new(TreeLimits {
        max_filters_per_client: 16,
        max_subscriptions: 10_000_000,
        ..TreeLimits::default()
    });
    for c in 0..clients {
        let id = format!("device-{c}");
        tree.subscribe(&id, &format!("sensors/{c}/+"), sub(QoS::AtLeastOnce))
            .unwrap();
        tree.subscribe(&id, &format!("alerts/{c}/#"), sub(QoS::AtMostOnce))
            .unwrap();
    }
    for (i, f) in [
        "sensors/+/temp",
        "#",
        "sensors/#",
        "+/+/temp",
        "$share/g/sensors/+/+",
    ]
    .into_iter()
    .enumerate()
    {
        tree.subscribe(&format!("watcher-{i}"), f, sub(QoS::AtMostOnce))
            .unwrap();
    }
    tree
}

fn matches_among_unrelated(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_tree/match_one_topic");
    for clients in [1_000usize, 10_000, 100_000] {
        let tree = sensors(clients);
        group.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, _| {
            b.iter(|| black_box(tree.matches(black_box("sensors/42/temp"), "publisher")));
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_tree/fan_out");
    for clients in [1_000usize, 10_000] {
        let mut tree = Tree::default();
        for i in 0..clients {
            tree.subscribe(&format!("reader-{i}"), "news/+", sub(QoS::AtMostOnce))
                .unwrap();
        }
        group.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, _| {
            b.iter(|| black_box(tree.matches(black_box("news/today"), "publisher")));
        });
    }
    group.finish();
}

criterion_group!(benches, matches_among_unrelated, fan_out);
criterion_main!(benches);
