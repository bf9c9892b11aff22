-- summaries.sqlite as facility-twin 0.1.0 (74fcc6a) wrote it; made by make_state.py
BEGIN TRANSACTION;
CREATE TABLE summary_points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,   -- the tags as canonical JSON (sorted keys): part of the identity
    ts_ns       INTEGER NOT NULL,
    fields      TEXT NOT NULL,   -- JSON object; ints stay ints, floats stay floats
    PRIMARY KEY (measurement, series, ts_ns)
) WITHOUT ROWID;
INSERT INTO "summary_points" VALUES('asset_state','{"asset":"ahu-1","site":"plant-old"}',1767225610000000000,'{"state": "online", "health": 100.0}');
INSERT INTO "summary_points" VALUES('asset_state','{"asset":"ahu-1","site":"plant-old"}',1767225620000000000,'{"state": "online", "health": 100.0}');
INSERT INTO "summary_points" VALUES('asset_state','{"asset":"ahu-1","site":"plant-old"}',1767225630000000000,'{"state": "online", "health": 100.0}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"filter_dp","site":"plant-old"}',1767225610000000000,'{"count": 10, "bad": 0, "mean": 290.0, "min": 290.0, "max": 290.0, "last": 290.0}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"filter_dp","site":"plant-old"}',1767225620000000000,'{"count": 10, "bad": 0, "mean": 300.0, "min": 300.0, "max": 300.0, "last": 300.0}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"filter_dp","site":"plant-old"}',1767225630000000000,'{"count": 10, "bad": 0, "mean": 310.0, "min": 310.0, "max": 310.0, "last": 310.0}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"supply_air_temp","site":"plant-old"}',1767225610000000000,'{"count": 10, "bad": 0, "mean": 14.1, "min": 14.1, "max": 14.1, "last": 14.1}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"supply_air_temp","site":"plant-old"}',1767225620000000000,'{"count": 10, "bad": 0, "mean": 14.2, "min": 14.2, "max": 14.2, "last": 14.2}');
INSERT INTO "summary_points" VALUES('telemetry','{"agent":"gw-old","asset":"ahu-1","asset_type":"ahu","point":"supply_air_temp","site":"plant-old"}',1767225630000000000,'{"count": 10, "bad": 0, "mean": 14.3, "min": 14.3, "max": 14.3, "last": 14.3}');
CREATE INDEX summary_points_by_time ON summary_points (measurement, ts_ns);
COMMIT;
