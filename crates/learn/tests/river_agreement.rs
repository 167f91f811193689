//! The Hoeffding tree's (and the online logistic regression's) prequential accuracy on the data/drift streams
//! against river's, recorded by scripts/river_check.py in
//! data/river/prequential.csv (no Python needed here). The target:
//! within 1 point.

use stratus_learn::{prequential, HoeffdingTree, LinearConfig, OnlineLogReg, TreeConfig};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A row with a non-numeric cell is the header (digits8x8.csv has none).
fn is_header(line: &str) -> bool {
    line.split(',').any(|c| c.trim().parse::<f64>().is_err())
}

fn load(name: &str) -> (Vec<f32>, Vec<usize>, usize) {
    let path = root().join(format!("data/drift/{name}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut xs, mut ys, mut d) = (Vec::new(), Vec::new(), 0);
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !is_header(l))
    {
        let cells: Vec<f64> = line
            .split(',')
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
            })
            .collect();
        d = cells.len() - 1;
        xs.extend(cells[..d].iter().map(|&v| v as f32));
        ys.push(cells[d] as usize);
    }
    (xs, ys, d)
}

/// river's accuracy for (stream, model) from the committed CSV.
fn river(stream: &str, model: &str) -> Option<(usize, f64)> {
    let path = root().join("data/river/prequential.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .find_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0] == stream && c[1] == model)
                .then(|| (c[2].parse().unwrap(), c[3].parse().unwrap()))
        })
}

fn agree(stream: &str) {
    let (xs, ys, d) = load(stream);
    let nc = ys.iter().max().unwrap() + 1;
    let (n, theirs) =
        river(stream, "hoeffding_tree").unwrap_or_else(|| panic!("no river row for {stream}"));
    assert_eq!(n, ys.len(), "{stream}: river saw another stream length");
    let mut t = HoeffdingTree::new(TreeConfig::default(), d, nc).unwrap();
    let ours = prequential(&mut t, &xs, d, &ys, 0).accuracy();
    eprintln!("{stream}: stratus {ours:.5} river {theirs:.5}");
    assert!(
        (ours - theirs).abs() <= 0.01,
        "{stream}: stratus {ours:.5} vs river {theirs:.5}"
    );
}

#[test]
fn hoeffding_tree_agrees_with_river_on_elec2() {
    agree("elec2");
}

#[test]
fn hoeffding_tree_agrees_with_river_on_weather() {
    agree("weather");
}

#[test]
fn hoeffding_tree_agrees_with_river_on_digits() {
    agree("digits8x8");
}

/// The online logistic (softmax) regression against river's
/// `StandardScaler | LogisticRegression` (`SoftmaxRegression` on digits):
/// the same algorithm, deterministic on both sides, within 0.5 points.
fn linear_agrees(stream: &str) {
    let (xs, ys, d) = load(stream);
    let nc = ys.iter().max().unwrap() + 1;
    let (n, theirs) =
        river(stream, "logreg").unwrap_or_else(|| panic!("no river row for {stream}"));
    assert_eq!(n, ys.len(), "{stream}: river saw another stream length");
    let mut m = OnlineLogReg::new(LinearConfig::default(), d, nc).unwrap();
    let ours = prequential(&mut m, &xs, d, &ys, 0).accuracy();
    eprintln!("{stream}: stratus {ours:.5} river {theirs:.5}");
    assert!(
        (ours - theirs).abs() <= 0.005,
        "{stream}: stratus {ours:.5} vs river {theirs:.5}"
    );
}

#[test]
fn online_logreg_agrees_with_river_on_elec2_weather_and_digits() {
    for s in ["elec2", "weather", "digits8x8"] {
        linear_agrees(s);
    }
}
