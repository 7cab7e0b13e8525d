"""The offline INSEE: a synthetic SIRENE day, a local API Sirene server, sample stock files.

Shipped with the platform because the embedded default (`FOXREVIEWS_SIRENE_SOURCE=sample`)
serves a synthetic day through the real client; the tests and benchmarks use the same
pieces. `lib/` does not depend on this package.

- `day`: `generate_day`, a deterministic day of establishment records in the API's shape;
- `fake_server`: `FakeInseeServer`, `/siret` and `/informations` with scripted faults;
- `reference`: the real communes and NAF codes the synthetic day draws from;
- `source`: the `sample` source, a synthetic day landed through the local server;
- `stock_files`: `write_sample_stock`, StockEtablissement/StockUniteLegale-like files.
"""
