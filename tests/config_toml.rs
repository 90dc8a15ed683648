use fusebox::*;
use std::time::Duration;
#[test]
fn probe() {
    let c = Config {
        providers: vec![Provider::new("a")
            .adaptive(Adaptive::default())
            .bulkhead(Bulkhead::new(3))
            .breaker(
                Breaker::rate_based()
                    .failure_rate(0.1, Window::Time(Duration::from_millis(90_500)))
                    .slow_call(Duration::from_secs(3), 0.3),
            )],
        routes: vec![Route::new("r")
            .providers(["a"])
            .when_all_open(AllOpen::Wait(Duration::from_secs(30)))],
        ..Config::default()
    };
    let s = c.to_toml_string();
    println!("{s}");
    println!("{:?}", Config::from_toml_str(&s).map(|x| x == c));
    for doc in [
        "",
        "[[providers]]\nname = \"a\"\n[providers.breaker]\nfailure_rate = 1.5\n",
        "x = 1",
        "event_capacity = 99999999999999999999",
        "[[providers]]\nname=\"a\"\nbreaker={consecutive=-1}",
        "[[providers]]\nname=\"a\"\nadaptive={tiers=[{above=1},{above=1}]}",
    ] {
        match Config::from_toml_str(doc) {
            Err(e) => println!("{e:?}\n  {e}"),
            Ok(_) => println!("ok"),
        }
    }
}
