# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/smartbroker --shell /usr/sbin/nologin smartbroker \
    && mkdir -p /var/lib/smartbroker \
    && chown smartbroker:smartbroker /var/lib/smartbroker

USER smartbroker
VOLUME ["/var/lib/smartbroker"]
EXPOSE 5672 15672 15692 9092

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 5672), timeout=2).close()"]

ENTRYPOINT ["smartbroker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "5672", "--management-port", "15672", "--data-dir", "/var/lib/smartbroker"]
