"""The system of record: connection URLs, migrations, an embeddable cluster."""
