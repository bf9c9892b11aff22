-- twin.sqlite as facility-twin 0.1.0 (74fcc6a) wrote it; made by make_state.py
BEGIN TRANSACTION;
CREATE TABLE asset_state (
    asset TEXT PRIMARY KEY, state TEXT NOT NULL, ts_ns INTEGER NOT NULL);
INSERT INTO "asset_state" VALUES('ahu-1','online',1796574008259223608);
CREATE TABLE changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, point TEXT NOT NULL,
    ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, old_value TEXT NOT NULL, new_value TEXT NOT NULL);
INSERT INTO "changes" VALUES(1,'ahu-1','',1796574008259223608,'asset_state','unknown','online');
CREATE TABLE point_state (
    asset TEXT NOT NULL, point TEXT NOT NULL, value TEXT, quality INTEGER NOT NULL,
    reason TEXT NOT NULL, ts_ns INTEGER NOT NULL, PRIMARY KEY (asset, point));
INSERT INTO "point_state" VALUES('ahu-1','filter_dp','360.0',1,'',1767225680000000000);
INSERT INTO "point_state" VALUES('ahu-1','supply_air_temp','14.8',1,'',1767225680000000000);
CREATE INDEX changes_ts ON changes (ts_ns);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('changes',1);
COMMIT;
