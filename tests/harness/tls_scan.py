"""Judge a TLS listener on 127.0.0.1 against Mozilla's intermediate profile, with sslyze (the
outside tool an auditor would run: `sslyze --mozilla_config=intermediate`)."""

from __future__ import annotations

import warnings
from pathlib import Path

from cryptography.utils import CryptographyDeprecationWarning
from sslyze import (
    CertificateInfoExtraArgument,
    ClientAuthenticationCredentials,
    ScanCommandsExtraArguments,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)


def mozilla_intermediate_issues(
    port: int, ca: Path, client: tuple[Path, Path] | None = None
) -> dict[str, str]:
    """What sslyze finds below Mozilla's intermediate profile on 127.0.0.1:`port` ({} when
    compliant); `ca` is the project CA the certificate chains to, `client` a (cert, key) pair
    for a listener that requires one."""
    credentials = ClientAuthenticationCredentials(*client) if client else None
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("127.0.0.1", port, ip_address="127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication="127.0.0.1", tls_client_auth_credentials=credentials
        ),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca)
        ),
    )
    with warnings.catch_warnings():
        # sslyze's bundled trust stores hold an old root with a negative serial number.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        scanner = Scanner()
        scanner.queue_scans([request])
        result = next(iter(scanner.get_results()))
    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(result, profile)
    except ServerNotCompliantWithTlsConfiguration as problem:
        return problem.issues
    return {}
