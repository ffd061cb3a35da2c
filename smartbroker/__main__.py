from smartbroker.cli import app

app()
