"""A real Orthanc PACS with its DICOMweb plugin (Debian `orthanc`, `orthanc-dicomweb`) on loopback.

Started once per test session on a free port with a throw-away storage folder and config,
stopped at the end. HTTP basic auth is on (user `medsam3`), and a Lua filter makes the PACS
refuse SEG objects of patient `MEDSAM3-REFUSE`: a real refusal for the error-path tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian orthanc-dicomweb
HAVE_ORTHANC = Path(ORTHANC).is_file() and DICOMWEB_PLUGIN.is_file()
NO_ORTHANC = "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
USER, PASSWORD = "medsam3", "test-password"
REFUSED_PATIENT = "MEDSAM3-REFUSE"

LUA_FILTER = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'SEG' and dicom.PatientID == '{REFUSED_PATIENT}' then
    return false
  end
  return true
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OrthancServer:
    url: str  # DICOMweb root
    http: str  # Orthanc's own REST root
    process: subprocess.Popen
    log: Path


def start_orthanc(folder: Path) -> OrthancServer:
    port, dicom_port = free_port(), free_port()
    (folder / "filter.lua").write_text(LUA_FILTER)
    config = {
        "Name": "medsam3-rt-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "LuaScripts": [str(folder / "filter.lua")],
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = folder / "orthanc.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=fh, stderr=subprocess.STDOUT, cwd=folder)
    http = f"http://127.0.0.1:{port}"
    server = OrthancServer(f"{http}/dicom-web", http, proc, log)
    import requests

    for _ in range(600):  # readiness: the DICOMweb plugin answers QIDO (polled, no time bound asserted)
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{server.url}/studies", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                return server
        except requests.exceptions.ConnectionError:
            pass
        time.sleep(0.1)
    stop_orthanc(server)
    raise RuntimeError(f"Orthanc did not become ready: {log.read_text()[-2000:]}")


def stop_orthanc(server: OrthancServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    if not HAVE_ORTHANC:
        pytest.skip(NO_ORTHANC)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    stop_orthanc(server)
