//! The store and the mount with many repositories: the bulk tag path, `ls PREFIX`
//! and `df` over them, and a walk of the mounted registry tree whose cost per entry
//! (SQL statements the daemon runs, FUSE requests) stays flat as the store grows.
//! Counts, not timings: `scripts/bench.sh` case 9 times the same at full size.

mod util;

use util::TestDir;

const TEAMS: usize = 10;
const TAGS: usize = 4;

/// Imports the demo layout and makes `scale/teamNN/rNNNN:t0..t3` for repositories
/// `from..to` in one bulk command; returns the source reference.
fn add_repos(t: &TestDir, from: usize, to: usize, per_team: usize) -> String {
    let source = if from == 0 {
        let (layout, images) = t.demo_layout("layout");
        t.run(&["import", layout.to_str().unwrap()]).assert_ok();
        images[0].name.clone()
    } else {
        std::fs::read_to_string(t.join("source")).unwrap()
    };
    std::fs::write(t.join("source"), &source).unwrap();
    let mut names = String::new();
    for r in from..to {
        for tag in 0..TAGS {
            names.push_str(&format!("scale/team{:02}/r{r:04}:t{tag}\n", r / per_team));
        }
    }
    let list = t.write("destinations.txt", names);
    t.run(&[
        "tag",
        &source,
        "--destinations-from",
        list.to_str().unwrap(),
    ])
    .assert_ok()
    .assert_stdout_contains(&format!("{} tags", (to - from) * TAGS));
    source
}

fn ls_json(t: &TestDir, prefix: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["ls", "--json"];
    args.extend(prefix);
    serde_json::from_str(&t.run(&args).assert_ok().stdout).unwrap()
}

#[test]
fn ls_prefix_and_df_with_many_repositories() {
    let t = TestDir::new("scale-ls");
    let repos = 200;
    add_repos(&t, 0, repos, repos / TEAMS);
    let all = ls_json(&t, None);
    let scale: Vec<_> = all.iter().filter(|r| r["registry"] == "scale").collect();
    assert_eq!(scale.len(), repos * TAGS);
    let size = scale[0]["size"].as_u64().unwrap();
    assert!(scale.iter().all(|r| r["size"].as_u64() == Some(size)));

    let team = ls_json(&t, Some("scale/team01"));
    assert_eq!(team.len(), repos / TEAMS * TAGS);
    assert!(team
        .iter()
        .all(|r| r["repository"].as_str().unwrap().starts_with("team01/")));
    let one = ls_json(&t, Some("scale/team01/r0021:t2"));
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["tag"], "t2");
    let repo = ls_json(&t, Some("scale/team01/r0021/"));
    assert_eq!(repo.len(), TAGS);
    // A prefix is whole path components: r002 names no repository.
    t.run(&["ls", "scale/team01/r002"])
        .assert_err_line("imagefs: ls scale/team01/r002");

    let df: serde_json::Value =
        serde_json::from_str(&t.run(&["df", "--json"]).assert_ok().stdout).unwrap();
    let entry = df["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "scale/team01/r0021")
        .expect("df lists the repository");
    assert_eq!(entry["total_bytes"].as_u64(), Some(size));
    assert_eq!(entry["unique_bytes"].as_u64(), Some(0));
    t.run(&["fsck"]).assert_ok();
}

/// Walks `scale/` as `find -maxdepth 3` then `ls -l` of every `tags/` would:
/// SQL statements (change-token checks apart) and requests per repository on a
/// first walk.
fn walk_cost(t: &TestDir, repos: usize) -> (f64, f64) {
    let mount = t.mount(&[]);
    let before = util::daemon_stats(mount.path());
    let mut tags_dirs = Vec::new();
    for team in std::fs::read_dir(mount.join("scale")).unwrap() {
        for repo in std::fs::read_dir(team.unwrap().path()).unwrap() {
            let repo = repo.unwrap().path();
            for entry in std::fs::read_dir(&repo).unwrap() {
                let entry = entry.unwrap();
                entry.metadata().unwrap();
                if entry.file_name() == "tags" {
                    tags_dirs.push(entry.path());
                }
            }
        }
    }
    assert_eq!(tags_dirs.len(), repos);
    for dir in &tags_dirs {
        for tag in std::fs::read_dir(dir).unwrap() {
            let tag = tag.unwrap().path();
            std::fs::symlink_metadata(&tag).unwrap();
            std::fs::read_link(&tag).unwrap();
        }
    }
    let after = util::daemon_stats(mount.path());
    let delta = |key: &str| (after[key] - before[key]) as f64 / repos as f64;
    let requests = ["req_lookup", "req_getattr", "req_readlink", "req_readdir"]
        .iter()
        .map(|key| delta(key))
        .sum();
    (delta("sql_statements"), requests)
}

#[test]
fn a_first_walk_costs_the_same_per_repository_however_big_the_store() {
    if !util::require_fuse() || !util::require_tool("getfattr") {
        return;
    }
    let t = TestDir::new("scale-walk");
    add_repos(&t, 0, 50, 5);
    let (sql_small, requests_small) = walk_cost(&t, 50);
    add_repos(&t, 50, 500, 5);
    let (sql_big, requests_big) = walk_cost(&t, 500);
    eprintln!(
        "per repository: {sql_small:.2} / {sql_big:.2} SQL statements, \
         {requests_small:.2} / {requests_big:.2} requests (50 / 500 repositories)"
    );
    // A repository's directory, its tags/ and manifests/ and its tags: their tags
    // come 64 repositories to a query (the next ones in name order, which a walk
    // lists next), and manifests/ counts its manifests from them; so well under
    // one statement per repository, none growing with the store (a stray poll of
    // the change watcher adds one now and then).
    assert!(sql_big <= 0.5, "{sql_big} statements per repository");
    assert!(sql_big <= sql_small + 0.5, "{sql_small} -> {sql_big}");
    // Requests: about 2 readdirs per directory and one readlink per tag.
    assert!(
        requests_big <= requests_small + 0.5,
        "{requests_small} -> {requests_big}"
    );
}
