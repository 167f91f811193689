//! Parser cases: one `check(parser, input, expect)` per case; add a case by
//! adding data. Successful parses print a compact summary of the rows.

use expect_test::{expect, Expect};

use super::*;

fn summary(parser: &str, input: &str) -> Result<String, TraceError> {
    let file = format!("{parser}.csv");
    Ok(match parser {
        "durations" => parse_durations(&file, input)?
            .iter()
            .map(|r| {
                format!(
                    "{}/{}/{} count={} avg={} p={:?}",
                    r.owner,
                    r.app,
                    r.function,
                    r.count,
                    r.duration.average,
                    r.duration.values()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "memory" => parse_memory(&file, input)?
            .iter()
            .map(|r| {
                format!(
                    "{}/{} samples={} avg={} p={:?}",
                    r.owner,
                    r.app,
                    r.sample_count,
                    r.memory_mb.average,
                    r.memory_mb.values()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "invocations" => parse_invocations(&file, input)?
            .iter()
            .map(|r| {
                format!(
                    "{}/{}/{} trigger={:?} per_minute={:?}",
                    r.owner, r.app, r.function, r.trigger, r.per_minute
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "cdf" => {
            let c = parse_cdf(&file, input)?;
            format!("{}: {:?}", c.name(), c.points())
        }
        _ => unreachable!("unknown parser {parser}"),
    })
}

fn check(parser: &str, input: &str, expect: Expect) {
    let actual = match summary(parser, input) {
        Ok(s) => format!("ok\n{s}"),
        Err(e) => format!("error: {e}"),
    };
    expect.assert_eq(&actual);
}

const DUR_HEADER: &str = "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,\
percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,\
percentile_Average_75,percentile_Average_99,percentile_Average_100";

fn dur(rows: &str) -> String {
    format!("{DUR_HEADER}\n{rows}")
}

#[test]
fn durations_happy_paths() {
    check(
        "durations",
        &dur("o,a,f,10.5,3,1.0,20.0,1,2,5,8,12,19,20\n"),
        expect![[r#"
            ok
            o/a/f count=3 avg=10.5 p=[1.0, 2.0, 5.0, 8.0, 12.0, 19.0, 20.0]"#]],
    );
    // Columns in another order (the vHive sample's), an extra column, CRLF,
    // a BOM, blank lines, a quoted field, a count written as 14.0.
    check(
        "durations",
        "\u{feff}HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,Extra,\
         percentile_Average_0,percentile_Average_1,percentile_Average_25,\
         percentile_Average_50,percentile_Average_75,percentile_Average_99,\
         percentile_Average_100\r\n\r\n\
         f1,a1,o1,14.0,52,31.0,73.0,x,52,52,52,52,52,56,56\r\n\
         \"f,2\",a2,o2,1,0,0,0,\"q\"\"uote\",0,0,0,0,0,0,0\r\n\r\n",
        expect![[r#"
            ok
            o1/a1/f1 count=14 avg=52 p=[52.0, 52.0, 52.0, 52.0, 52.0, 56.0, 56.0]
            o2/a2/f,2 count=1 avg=0 p=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]"#]],
    );
}

#[test]
fn durations_errors() {
    check(
        "durations",
        "",
        expect!["error: durations.csv: the file is empty; expected a CSV header line"],
    );
    check(
        "durations",
        "\n\r\n\n",
        expect!["error: durations.csv: the file is empty; expected a CSV header line"],
    );
    check(
        "durations",
        &dur("\n"),
        expect!["error: durations.csv: no data rows after the header"],
    );
    check(
        "durations",
        "HashOwner,HashApp,HashFunction,Average,Count\no,a,f,1,1\n",
        expect!["error: durations.csv:1: missing column 'percentile_Average_0' (the header has: HashOwner, HashApp, HashFunction, Average, Count)"],
    );
    check(
        "durations",
        "HashApp,HashFunction,Average,Count,a,b,c,d,e,f,g\n",
        expect!["error: durations.csv:1: missing column 'HashOwner' (the header has: HashApp, HashFunction, Average, Count, a, b, c, d, … (11 columns))"],
    );
    check(
        "durations",
        &dur("o,a,f,10,3,1,20,1,2,five,8,12,19,20\n"),
        expect![[
            r#"error: durations.csv:2:21: column 'percentile_Average_25': expected a number, found "five""#
        ]],
    );
    check(
        "durations",
        &dur("o,a,f,10,3,1,20,1,2,,8,12,19,20\n"),
        expect![[
            r#"error: durations.csv:2:21: column 'percentile_Average_25': expected a number, found """#
        ]],
    );
    check(
        "durations",
        &dur("o,a,f,NaN,3,1,20,1,2,5,8,12,19,20\n"),
        expect![[r#"error: durations.csv:2:7: column 'Average': expected a number, found "NaN""#]],
    );
    check(
        "durations",
        &dur("o,a,f,10,3,1,20,1,2,5,-8,12,19,20\n"),
        expect!["error: durations.csv:2:23: column 'percentile_Average_50': negative value -8 (times, sizes and counts cannot be negative)"],
    );
    check(
        "durations",
        &dur("o,a,f,10,2.5,1,20,1,2,5,8,12,19,20\n"),
        expect![[
            r#"error: durations.csv:2:10: column 'Count': expected a whole number, found "2.5""#
        ]],
    );
    check(
        "durations",
        &dur("o,a,f,10,3,1,20,1,2,5,8,12,19,20\no,a,f,10,3,1,20,1,2,5,8,12,19\n"),
        expect!["error: durations.csv:3: expected 14 fields as in the header, found 13"],
    );
    check(
        "durations",
        &dur("o,\"a,f,10,3,1,20,1,2,5,8,12,19,20\n"),
        expect!["error: durations.csv:2:3: unterminated quoted field (a quoted field must close on the same line)"],
    );
    check(
        "durations",
        &dur("o,\"a\"x,f,10,3,1,20,1,2,5,8,12,19,20\n"),
        expect!["error: durations.csv:2:6: unexpected text after a closing quote (expected ',' or the end of the line)"],
    );
}

const MEM_HEADER: &str =
    "HashApp,HashOwner,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,\
AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,\
AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,\
AverageAllocatedMb_pct100";

#[test]
fn memory_cases() {
    check(
        "memory",
        &format!("{MEM_HEADER}\na,o,1000,421,369,414,414,414,433,444,453,636\n"),
        expect![[r#"
            ok
            o/a samples=1000 avg=421 p=[369.0, 414.0, 414.0, 414.0, 433.0, 444.0, 453.0, 636.0]"#]],
    );
    check(
        "memory",
        "HashApp,HashOwner,SampleCount,AverageAllocatedMb\na,o,1,2\n",
        expect!["error: memory.csv:1: missing column 'AverageAllocatedMb_pct1' (the header has: HashApp, HashOwner, SampleCount, AverageAllocatedMb)"],
    );
    check(
        "memory",
        &format!("{MEM_HEADER}\na,o,1000,421,369,414,414,414,433,-444,453,636\n"),
        expect!["error: memory.csv:2:34: column 'AverageAllocatedMb_pct95': negative value -444 (times, sizes and counts cannot be negative)"],
    );
}

#[test]
fn invocations_cases() {
    // The public dataset's layout: Trigger, minutes named 1..N.
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f,http,0,5,1\no,a,g,timer,1,1,1\n",
        expect![[r#"
            ok
            o/a/f trigger=Some("http") per_minute=[0, 5, 1]
            o/a/g trigger=Some("timer") per_minute=[1, 1, 1]"#]],
    );
    // The vHive sample's layout: no Trigger, minute_N, columns in any order.
    check(
        "invocations",
        "HashFunction,HashApp,HashOwner,minute_2,minute_1\nf,a,o,7,3\n",
        expect![[r#"
            ok
            o/a/f trigger=None per_minute=[3, 7]"#]],
    );
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,Trigger\no,a,f,http\n",
        expect!["error: invocations.csv:1: missing column '1' (the header has: HashOwner, HashApp, HashFunction, Trigger)"],
    );
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,minute_1,minute_3\no,a,f,1,2\n",
        expect!["error: invocations.csv:1: missing column 'minute_2' (the header has: HashOwner, HashApp, HashFunction, minute_1, minute_3)"],
    );
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,1,minute_1\no,a,f,1,2\n",
        expect!["error: invocations.csv:1: column 'minute_1' appears more than once"],
    );
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,1,2\no,a,f,1,1.5\n",
        expect![[
            r#"error: invocations.csv:2:9: column '2': expected a whole number, found "1.5""#
        ]],
    );
    check(
        "invocations",
        "HashOwner,HashApp,HashFunction,1\no,a,f,4294967296\n",
        expect![[
            r#"error: invocations.csv:2:7: column '1': expected a count below 2^32, found "4294967296""#
        ]],
    );
}

#[test]
fn cdf_cases() {
    // The first value repeats, as in the published files.
    check(
        "cdf",
        "width,cdf\n1,1.42035144488702e-09\n1,0.786616869751026\n2,0.92\n35385,1\n",
        expect![[r#"
            ok
            width: [(1, 1.42035144488702e-9), (1, 0.786616869751026), (2, 0.92), (35385, 1.0)]"#]],
    );
    // Within the tolerance of 1; the value column need not come first.
    check(
        "cdf",
        "cdf,depth\r\n0.5,1\r\n0.9999995,3\r\n",
        expect![[r#"
            ok
            depth: [(1, 0.5), (3, 0.9999995)]"#]],
    );
    check(
        "cdf",
        "depth,cdf\n1,0.5\n3,0.99\n",
        expect!["error: cdf.csv:3: the CDF ends at 0.99, not 1 (tolerance 1e-6); is the file truncated?"],
    );
    check(
        "cdf",
        "depth,cdf\n2,0.5\n1,1\n",
        expect!["error: cdf.csv:3:1: column 'depth': 1 is below the previous row's 2; a CDF's rows must be sorted"],
    );
    check(
        "cdf",
        "depth,cdf\n1,0.5\n2,0.4\n3,1\n",
        expect!["error: cdf.csv:3:3: column 'cdf': 0.4 is below the previous row's 0.5; a CDF's rows must be sorted"],
    );
    check(
        "cdf",
        "depth,cdf\n1,1.5\n",
        expect![[
            r#"error: cdf.csv:2:3: column 'cdf': expected a probability in [0, 1], found "1.5""#
        ]],
    );
    check(
        "cdf",
        "depth,cdf\n1.5,1\n",
        expect![[r#"error: cdf.csv:2:1: column 'depth': expected a whole number, found "1.5""#]],
    );
    check(
        "cdf",
        "depth,cdf\n-1,1\n",
        expect!["error: cdf.csv:2:1: column 'depth': negative value -1 (times, sizes and counts cannot be negative)"],
    );
    check(
        "cdf",
        "depth,prob\n1,1\n",
        expect!["error: cdf.csv:1: missing column 'cdf' (the header has: depth, prob)"],
    );
    check(
        "cdf",
        "cdf\n1\n",
        expect!["error: cdf.csv:1: missing column '<value> (a column besides 'cdf')' (the header has: cdf)"],
    );
    check(
        "cdf",
        "depth,cdf\n",
        expect!["error: cdf.csv: no data rows after the header"],
    );
}

#[test]
fn cdf_quantiles_follow_the_step_rule() {
    let c = parse_cdf("w.csv", "width,cdf\n1,1e-9\n1,0.5\n3,0.75\n7,1\n").unwrap();
    // Smallest value whose cumulative probability is >= u.
    assert_eq!(c.quantile(0.0), 1);
    assert_eq!(c.quantile(0.5), 1);
    assert_eq!(c.quantile(0.500_001), 3);
    assert_eq!(c.quantile(0.75), 3);
    assert_eq!(c.quantile(0.9), 7);
    assert_eq!(c.prob_le(0), 0.0);
    assert_eq!(c.prob_le(2), 0.5);
    assert_eq!(c.prob_le(100), 1.0);
    assert_eq!(c.pmf(), vec![(1, 0.5), (3, 0.25), (7, 0.25)]);
    assert_eq!(
        Cdf::new("x", vec![(1, 0.5), (0, 1.0)])
            .unwrap_err()
            .to_string(),
        "CDF 'x' point 1: (0, 1) is below the previous point (1, 0.5); points must be sorted"
    );
    assert_eq!(
        Cdf::new("x", vec![(1, 0.5)]).unwrap_err().to_string(),
        "CDF 'x' point 0: the CDF ends at 0.5, not 1"
    );
    // Deserialising checks the same way.
    let round_trip: Cdf = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(round_trip, c);
    let bad = serde_json::from_str::<Cdf>(r#"{"name":"x","points":[[1,0.5]]}"#);
    assert_eq!(
        bad.unwrap_err().to_string(),
        "CDF 'x' point 0: the CDF ends at 0.5, not 1"
    );
}

#[test]
fn percentile_quantiles_interpolate() {
    let d = DurationPercentiles {
        average: 0.0,
        p0: 0.0,
        p1: 10.0,
        p25: 20.0,
        p50: 30.0,
        p75: 40.0,
        p99: 100.0,
        p100: 200.0,
    };
    assert_eq!(d.quantile(0.0), 0.0);
    assert_eq!(d.quantile(0.005), 5.0);
    assert_eq!(d.quantile(0.5), 30.0);
    assert_eq!(d.quantile(0.625), 35.0);
    assert_eq!(d.quantile(0.995), 150.0);
    assert_eq!(d.quantile(1.0), 200.0);
    // An unsorted row is read as its running maximum.
    let bent = DurationPercentiles { p25: 5.0, ..d };
    assert_eq!(bent.quantile(0.25), 10.0);
    let m = MemoryPercentiles {
        average: 0.0,
        p1: 100.0,
        p5: 100.0,
        p25: 120.0,
        p50: 140.0,
        p75: 160.0,
        p95: 200.0,
        p99: 300.0,
        p100: 400.0,
    };
    assert_eq!(m.quantile(0.0), 100.0);
    assert_eq!(m.quantile(0.375), 130.0);
    assert_eq!(m.quantile(1.0), 400.0);
}

fn dur_row(owner: &str, app: &str, function: &str, count: u64) -> DurationRow {
    DurationRow {
        owner: owner.into(),
        app: app.into(),
        function: function.into(),
        count,
        duration: DurationPercentiles {
            average: 1.0,
            p0: 1.0,
            p1: 1.0,
            p25: 1.0,
            p50: 1.0,
            p75: 1.0,
            p99: 1.0,
            p100: 1.0,
        },
    }
}

#[test]
fn join_cases() {
    let memory = parse_memory(
        "m.csv",
        &format!("{MEM_HEADER}\na1,o,1,10,1,2,3,4,5,6,7,8\na1,o,1,99,9,9,9,9,9,9,9,9\n"),
    )
    .unwrap();
    let invocations = parse_invocations(
        "i.csv",
        "HashOwner,HashApp,HashFunction,Trigger,1,2\n\
         o,a1,f1,http,1,2\no,a1,f1,queue,10,20\no,a2,f2,timer,0,1\n",
    )
    .unwrap();
    let durations = vec![
        dur_row("o", "a1", "f1", 100),
        dur_row("o", "a2", "f2", 5),
        dur_row("o", "a3", "f3", 100),
    ];
    let all = join(
        durations.clone(),
        &memory,
        invocations.clone(),
        &Selection::default(),
    )
    .unwrap();
    let shown: Vec<String> = all
        .iter()
        .map(|p| {
            format!(
                "{} mem_p50={:?} trigger={:?} per_minute={:?}",
                p.function,
                p.memory_mb.map(|m| m.p50),
                p.trigger,
                p.per_minute
            )
        })
        .collect();
    expect![[r#"
        [
            "f1 mem_p50=Some(4.0) trigger=Some(\"http\") per_minute=Some([11, 22])",
            "f2 mem_p50=None trigger=Some(\"timer\") per_minute=Some([0, 1])",
            "f3 mem_p50=None trigger=None per_minute=None",
        ]
    "#]]
    .assert_debug_eq(&shown);
    // Without a memory row, the default memory is used without a draw.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    assert_eq!(all[2].sample_memory_mb(&mut rng), DEFAULT_MEMORY_MB);

    let strict = Selection {
        min_count: 10,
        require_memory: true,
        require_invocations: true,
    };
    let kept = join(durations.clone(), &memory, invocations.clone(), &strict).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].function, "f1");

    let none = Selection {
        min_count: 1000,
        ..strict
    };
    expect!["no functions left after filtering: of 3 duration rows, 3 have Count below 1000, 0 have no memory row (required: true), 0 have no invocations row (required: true)"]
        .assert_eq(&join(durations, &memory, invocations, &none).unwrap_err().to_string());
}

use rand::SeedableRng;
