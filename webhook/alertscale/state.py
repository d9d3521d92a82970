"""alertscale's own state in SQLite: desired replicas, cooldown clocks, events. Docker knows the rest."""
import json
import sqlite3
import threading

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    service TEXT PRIMARY KEY,
    desired INTEGER,
    last_action REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    service TEXT,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT,
    replicas_before INTEGER,
    replicas_after INTEGER,
    server TEXT,
    container TEXT,
    detail TEXT
);
"""
EVENTS_KEPT = 10000


class State:
    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)

    def _service(self, service):
        with self.lock:
            return self.db.execute("SELECT * FROM services WHERE service = ?", (service,)).fetchone()

    def desired(self, service):
        row = self._service(service)
        return row["desired"] if row and row["desired"] is not None else None

    def last_action(self, service):
        row = self._service(service)
        return row["last_action"] if row else None

    def set_desired(self, service, desired):
        with self.lock:
            self.db.execute("INSERT INTO services (service, desired) VALUES (?, ?) "
                            "ON CONFLICT(service) DO UPDATE SET desired = excluded.desired", (service, desired))

    def start_cooldown(self, service, when):
        with self.lock:
            self.db.execute("INSERT INTO services (service, last_action) VALUES (?, ?) "
                            "ON CONFLICT(service) DO UPDATE SET last_action = excluded.last_action",
                            (service, when))

    def record(self, event):
        """Append an event (a dict with the events columns); keep the newest EVENTS_KEPT."""
        event = dict(event)
        detail = event.pop("detail", None)
        columns = ["time", "service", "action", "source", "result", "reason",
                   "replicas_before", "replicas_after", "server", "container"]
        with self.lock:
            self.db.execute(f"INSERT INTO events ({', '.join(columns)}, detail) VALUES "
                            f"({', '.join('?' * (len(columns) + 1))})",
                            [event.get(c) for c in columns] + [json.dumps(detail) if detail else None])
            self.db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_KEPT,))

    def events(self, limit=100, service=None):
        """Newest first."""
        query, args = "SELECT * FROM events", []
        if service:
            query, args = query + " WHERE service = ?", [service]
        with self.lock:
            rows = self.db.execute(query + " ORDER BY id DESC LIMIT ?", args + [limit]).fetchall()
        events = []
        for row in rows:
            event = {k: row[k] for k in row.keys() if row[k] is not None}
            if "detail" in event:
                event["detail"] = json.loads(event["detail"])
            events.append(event)
        return events
