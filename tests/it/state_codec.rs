//! The packed owner-hash values have one Rust codec (`store::state`) and one Lua copy
//! (`scripts::STATE`, prepended to every script that reads them): run the Lua one in a real
//! `redis-server` over a table of values and require the same reading and the same bytes as
//! the Rust one, so the two cannot drift apart.
use tollgate_server::limiter::Period;
use tollgate_server::store::redis::scripts::{PERIODS, STATE};
use tollgate_server::store::state::{Override, PlanState, period_letter};
use tollgate_tests::redis::RedisServer;

/// What the Lua codec reads from ARGV[1], re-encoded with the Lua encoders (empty: no value).
const PROBE: &str = r#"
local out = {}
local a, u, l, d = state_decode(ARGV[1])
if d then
  out[1] = state_daily(a, u, l, d)
elseif a then
  out[1] = state_quota(a, u)
else
  out[1] = ''
end
local oi, ol = override_decode(ARGV[1])
if oi then out[2] = override_encode(oi, ol) else out[2] = '' end
return out
"#;

const VALUES: &[&str] = &[
    "657:12",
    "-3:0",
    "20000:5d:2",
    "20000:5w:0",
    "20000:5m:9",
    "20000:0:4",
    "5:3:",
    "5:3d4",
    "5:3d",
    "5:-3",
    "+5:3",
    "5:3:x",
    "5:3dd:1",
    "5",
    "",
    "a:b",
    "657:10:1",
];

#[test]
fn lua_and_rust_read_and_write_the_same_values() {
    let redis = RedisServer::start();
    let mut conn = redis.client().get_connection().expect("redis connection");
    let script = redis::Script::new(&format!("{PERIODS}\n{STATE}\n{PROBE}"));
    for v in VALUES {
        let (state, over): (String, String) =
            script.arg(*v).invoke(&mut conn).expect("probe script");
        let rust_state = PlanState::decode(v).map(|s| s.encode()).unwrap_or_default();
        assert_eq!(state, rust_state, "plan state {v:?}");
        let rust_over = Override::decode(v).map(|o| o.encode()).unwrap_or_default();
        assert_eq!(over, rust_over, "override {v:?}");
    }
}

#[test]
fn the_period_letters_agree() {
    let letters: Vec<String> = [Period::Day, Period::Week, Period::Month]
        .into_iter()
        .map(|p| format!("'{}'", period_letter(p)))
        .collect();
    let table = format!("local PERIOD_LETTER = {{{}}}", letters.join(", "));
    assert!(STATE.contains(&table), "{table} not in scripts::STATE");
}
