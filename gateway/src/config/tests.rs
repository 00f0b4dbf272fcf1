use super::*;

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
}

#[test]
fn secrets_are_never_shown_nor_echoed() {
    let cfg = Config::parse(
        "[notify]\nwebhook_url = \"http://relay:8080/hooks/T0/B0/s3cret?k=v\"\n\n[admin]\ntoken = \"t0ken\"\n",
    )
    .unwrap();
    let shown = toml::to_string(&cfg.redacted()).unwrap();
    assert!(
        shown.contains("webhook_url = \"http://relay:8080/<redacted>\"")
            && !shown.contains("s3cret")
            && !shown.contains("t0ken"),
        "{shown}"
    );
    let err = Config::parse("[admin]\ntoken = 123456789\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.token") && !err.contains("123456789"),
        "{err}"
    );
}

#[test]
fn test_hooks_are_an_unknown_key_without_the_hooks() {
    let cfg = Config::parse("[cache]\ntest_hooks = true\n").unwrap();
    assert_eq!(cfg.cache.test_hooks, Some(true), "a test build has them");
    let err = cfg.test_hooks_built(false).unwrap_err().to_string();
    assert!(
        err.contains("cache.test_hooks") && err.contains("unknown"),
        "{err}"
    );
    assert!(Config::default().test_hooks_built(false).is_ok());
    assert!(!Config::default_toml().contains("test_hooks"));
}

#[test]
fn default_toml_round_trips() {
    assert_eq!(
        Config::parse(&Config::default_toml()).unwrap(),
        Config::default()
    );
}

#[test]
fn servers_are_host_and_port() {
    let cfg = Config::parse(
        "[upstream.fallback]\nservers = [\"nodejs-api.ultragate.svc:3005\", \"[::1]:80\"]\n",
    )
    .unwrap();
    assert_eq!(
        cfg.upstream.fallback.servers[0].as_str(),
        "nodejs-api.ultragate.svc:3005"
    );
    let err = Config::parse("[upstream.fallback]\nservers = [\"nodejs-api:http\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upstream.fallback.servers[0]") && err.contains("HOST:PORT"),
        "{err}"
    );
}

#[test]
fn named_pools_and_routes() {
    let cfg = Config::parse(
        "[upstream.api]\nservers = [\"127.0.0.1:9001\"]\nfallback = \"fallback\"\nbalance = \"p2c_ewma\"\n\
         [upstream.assets]\nservers = [\"127.0.0.1:9002\"]\n\
         [[route]]\nname = \"api\"\nhost = \"*.example.com\"\npath_prefix = \"/v1/\"\nupstream = \"api\"\n\
         [[route]]\nname = \"assets\"\nupstream = \"assets\"\ncache = false\nmethods = [\"GET\", \"HEAD\"]\n",
    )
    .unwrap();
    let names: Vec<_> = cfg.upstream.all().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["primary", "fallback", "api", "assets"]);
    assert_eq!(cfg.upstream.primary.fallback.as_deref(), Some("fallback"));
    assert_eq!(
        cfg.upstream.named["api"].fallback.as_deref(),
        Some("fallback")
    );
    assert_eq!(cfg.upstream.named["assets"].fallback, None);
    assert_eq!(cfg.upstream.named["assets"].balance, BalanceKey::P2cEwma);
    assert_eq!(cfg.route[0].path_prefix, "/v1/");
    assert_eq!(cfg.route[1].path_prefix, "/", "the default");
    assert!(cfg.route[0].cache && !cfg.route[1].cache);
    // Written out and read back: the same config.
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(Config::parse(&text).unwrap(), cfg);
}

#[test]
fn a_value_with_256_single_quotes_in_a_row_survives_a_round_trip() {
    // Found by the config fuzzer: toml 0.8's writer counted quotes in
    // a u8 (a panic with overflow checks, broken TOML without); the
    // config is written out for `GET /admin/config`.
    let text = format!(
        "[upstream.farack]\nservers = [\"120HH{}HHH03:5\"]\n",
        "'".repeat(267)
    );
    let cfg = Config::parse(&text).unwrap();
    let again = toml::to_string(&cfg).unwrap();
    assert_eq!(Config::parse(&again).unwrap(), cfg);
}

#[test]
fn balance_is_round_robin_unless_asked() {
    let cfg = Config::parse("[upstream.fallback]\nbalance = \"p2c_ewma\"\n").unwrap();
    assert_eq!(cfg.upstream.primary.balance, BalanceKey::RoundRobin);
    assert_eq!(cfg.upstream.fallback.balance, BalanceKey::P2cEwma);
}

#[test]
fn runbook_fix_enable_dpdk_false_is_accepted() {
    let cfg = Config::parse("[api_gateway]\nenable_dpdk = false\n").unwrap();
    assert!(!cfg.api_gateway.enable_dpdk);
}

#[test]
fn errors_name_the_key() {
    let table = [
        (
            "[api_gateway]\nlisten = \"nowhere\"\n",
            "api_gateway.listen",
        ),
        ("[api_gateway]\nlisten = 8080\n", "api_gateway.listen"),
        ("[api_gateway]\nworkers = 4\n", "workers"),
        (
            "[api_gateway]\nlisten = \"\"\n",
            "api_gateway.listen",
        ),
        ("[tls]\nlisten = \"0.0.0.0:8443\"\n", "tls.certificate"),
        ("[tls]\nlisten = \"nowhere:x\"\n", "tls.listen"),
        ("[tls]\nmin_version = \"1.1\"\n", "tls.min_version"),
        ("[tls]\nhandshake_timeout_ms = 0\n", "tls.handshake_timeout_ms"),
        (
            "[[tls.certificate]]\ncert_file = \"a.crt\"\n",
            "tls.certificate",
        ),
        ("[upstream.primary]\ntls = \"yes\"\n", "upstream"),
        (
            "[api_gateway]\nmax_header_bytes = 10\n",
            "api_gateway.max_header_bytes",
        ),
        ("[api_gateway]\ncores = [999]\n", "api_gateway.cores"),
        (
            "[api_gateway]\nio_backend = \"dpdk\"\n",
            "api_gateway.io_backend",
        ),
        (
            "[api_gateway]\nmax_connections_per_core = 0\n",
            "api_gateway.max_connections_per_core",
        ),
        ("[dpdk]\naddress = \"10.0.0.1\"\n", "dpdk.address"),
        ("[dpdk]\ngateway = \"router\"\n", "dpdk.gateway"),
        ("[dpdk]\nport = -1\n", "dpdk.port"),
        (
            "[upstream.primary]\nservers = []\n",
            "upstream.primary.servers",
        ),
        (
            "[upstream.primary]\nservers = [\"127.0.0.1\"]\n",
            "upstream.primary.servers",
        ),
        (
            "[upstream.fallback]\nconnect_timeout_ms = -1\n",
            "upstream.fallback.connect_timeout_ms",
        ),
        (
            "[upstream.primary]\nresponse_timeout_ms = 0\n",
            "upstream.primary.response_timeout_ms",
        ),
        ("[upstream.canary]\nservers = []\n", "canary"),
        (
            "[upstream.api]\nfallback = \"legacy\"\n",
            "upstream.api.servers",
        ),
        (
            "[upstream.api]\nservers = [\"127.0.0.1:1\"]\nfallback = \"legacy\"\n",
            "upstream.api.fallback",
        ),
        (
            "[upstream.a]\nservers = [\"127.0.0.1:1\"]\nfallback = \"b\"\n[upstream.b]\nservers = [\"127.0.0.1:2\"]\nfallback = \"a\"\n",
            "upstream.a.fallback",
        ),
        (
            "[upstream.api]\nservers = [\"127.0.0.1:1\"]\nerror_rate_threshold = 2.0\n",
            "upstream.api.error_rate_threshold",
        ),
        (
            "[[route]]\nname = \"api\"\nupstream = \"nowhere\"\n",
            "route[0].upstream",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\n[[route]]\nname = \"x\"\nupstream = \"fallback\"\n",
            "route[1].name",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\nhost = \"a b\"\n",
            "route[0].host",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\npath_prefix = \"v1\"\n",
            "route[0].path_prefix",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\nmethods = [\"get\"]\n",
            "route[0].methods",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\ncache_ttl = 5\n",
            "cache_ttl",
        ),
        (
            "[[route]]\nname = \"x\"\nupstream = \"primary\"\ncache_ttl_override_s = -1\n",
            "cache_ttl_override_s",
        ),
        (
            "[upstream.primary]\nbalance = \"random\"\n",
            "upstream.primary.balance",
        ),
        ("[nonsense]\n", "nonsense"),
        ("[cache]\nmax_bytes = 10\n", "cache.max_bytes"),
        (
            "[cache]\nmax_object_bytes = 999999999999\n",
            "cache.max_object_bytes",
        ),
        ("[cache]\nsnapshot_dir = 5\n", "cache.snapshot_dir"),
        (
            "[control]\nerror_rate_threshold = 3.0\n",
            "control.error_rate_threshold",
        ),
        ("[control]\np99_threshold = 3\n", "p99_threshold"),
        (
            "[upstream.fallback]\nhealth_path = \"health\"\n",
            "upstream.fallback.health_path",
        ),
        ("[security]\naudit_log = 1\n", "security.audit_log"),
        ("[api_gateway\n", "line 1"),
    ];
    for (text, key) in table {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(
            err.contains(key),
            "{text:?} gave {err:?}, which does not name {key}"
        );
    }
}
