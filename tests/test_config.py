"""config.py: newsletter.yaml -> Network, strictly, with environment overrides for SMTP."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from newsletter.errors import InputError
from newsletter.input.config import contrast_with_white, load_network, setting_keys
from newsletter.model import TlsMode

REPO = Path(__file__).resolve().parent.parent
CONFIG = (REPO / "newsletter.yaml").read_text(encoding="utf-8")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InputError) as caught:
        load_network(path, environ or {})
    return [str(p) for p in caught.value.problems]


def test_the_repository_config_loads_with_the_helpline_and_paths_from_its_folder(
        tmp_path: Path) -> None:
    network = load_network(write_config(tmp_path, CONFIG), {})
    assert network.root == tmp_path
    assert network.database == tmp_path / "newsletter.db"
    assert network.helpline.phone == "08000 121 700"
    assert network.helpline.phone_tel == "tel:08000121700"
    assert network.helpline.report_url.startswith("https://")
    assert network.sender.address == "news@wmasn.example.org"
    assert network.list_id.header == "WMASN Network News <news.wmasn.example.org>"
    assert network.smtp.tls is TlsMode.STARTTLS
    assert network.limits.per_minute == 30 and network.limits.concurrency == 2
    assert network.unsubscribe.url == "https://news.wmasn.example.org/unsubscribe"
    assert network.archive.quick_exit_url == "https://www.bbc.co.uk/weather"


def test_environment_variables_override_the_smtp_settings(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    network = load_network(path, {"NEWSLETTER_SMTP_HOST": "127.0.0.1",
                                  "NEWSLETTER_SMTP_PORT": "2525",
                                  "NEWSLETTER_SMTP_TLS": "none",
                                  "NEWSLETTER_SMTP_USER": "proof"})
    assert (network.smtp.host, network.smtp.port, network.smtp.tls, network.smtp.user) == (
        "127.0.0.1", 2525, TlsMode.NONE, "proof")


def test_a_bad_environment_override_is_reported_by_its_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    assert problems_of(path, {"NEWSLETTER_SMTP_PORT": "25x", "NEWSLETTER_SMTP_TLS": "none"}) == [
        "environment variable NEWSLETTER_SMTP_PORT: expected a port number 1 to 65535, "
        "found '25x'",
        "environment variable NEWSLETTER_SMTP_TLS: smtp.tls: tls: none sends the password and "
        "every message in the clear to smtp.wmasn.example.org (use starttls or implicit; none "
        "is only for a server on 127.0.0.1)",
    ]


def test_a_unicode_sender_domain_is_idna_encoded(tmp_path: Path) -> None:
    text = CONFIG.replace("address: news@wmasn.example.org", "address: news@bücher.example")
    network = load_network(write_config(tmp_path, text), {})
    assert network.sender.address == "news@xn--bcher-kva.example"
    assert network.sender_domain == "xn--bcher-kva.example"


def test_every_problem_in_the_config_is_reported_at_once(tmp_path: Path) -> None:
    text = (CONFIG.replace('colour: "#1d4f91"', 'colour: "#999999"')
            .replace("concurrency: 2", "concurrency: 0")
            .replace("reply_to:\n  name: WMASN Coordinator", "reply_to:\n  nmae: WMASN"))
    path = write_config(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:10:3: reply_to.nmae: unknown key in reply_to settings (did you mean 'name'?)",
        f"{path}:10:3: reply_to.name: required",
        f"{path}:26:11: brand.colour: #999999 on white has a contrast of 2.84:1; at least 4.5:1 "
        "is needed (choose a darker shade so links and headings stay readable)",
        f"{path}:42:16: limits.concurrency: expected at least 1, found 0",
    ]


def test_dkim_needs_both_the_key_file_and_the_selector(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG.replace(
        "  password_env: NEWSLETTER_SMTP_PASSWORD\n",
        "  password_env: NEWSLETTER_SMTP_PASSWORD\n  dkim_key: /etc/keys/news.pem\n"))
    assert problems_of(path) == [f"{path}:33:3: smtp.dkim_selector: required with dkim_key "
                                 "(DKIM needs both the key file and the selector; or set "
                                 "NEWSLETTER_DKIM_SELECTOR)"]
    text = path.read_text().replace("dkim_key: /etc/keys/news.pem",
                                    "dkim_key: /etc/keys/news.pem\n  dkim_selector: news2016")
    network = load_network(write_config(tmp_path, text), {})
    assert (network.smtp.dkim_key, network.smtp.dkim_selector) == (
        Path("/etc/keys/news.pem"), "news2016")


def test_dkim_settings_come_from_the_environment_too_and_are_checked_there(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    network = load_network(path, {"NEWSLETTER_DKIM_KEY": "/keys/news.pem",
                                  "NEWSLETTER_DKIM_SELECTOR": "mail.2016"})
    assert (network.smtp.dkim_key, network.smtp.dkim_selector) == (
        Path("/keys/news.pem"), "mail.2016")
    assert problems_of(path, {"NEWSLETTER_DKIM_KEY": "/keys/news.pem",
                              "NEWSLETTER_DKIM_SELECTOR": "bad selector"}) == [
        "environment variable NEWSLETTER_DKIM_SELECTOR: smtp.dkim_selector: expected a DNS "
        "label like news2016, found 'bad selector'"]


def test_a_missing_config_file_says_how_to_find_it(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "newsletter.yaml") == [
        f"{tmp_path}/newsletter.yaml: settings file not found (run newsletter in the project "
        "folder, or give --config)"]


@pytest.mark.parametrize(("colour", "ratio"), [
    ("#ffffff", 1.0), ("#000000", 21.0), ("#1d4f91", 8.1), ("#767676", 4.5), ("#777777", 4.5),
])
def test_contrast_with_white_follows_wcag(colour: str, ratio: float) -> None:
    assert round(contrast_with_white(colour), 1) == ratio


def test_a_grey_just_under_four_and_a_half_to_one_is_refused(tmp_path: Path) -> None:
    assert contrast_with_white("#777777") < 4.5 <= contrast_with_white("#767676")
    path = write_config(tmp_path, CONFIG.replace('colour: "#1d4f91"', 'colour: "#777777"'))
    assert problems_of(path) == [
        f"{path}:26:11: brand.colour: #777777 on white has a contrast of 4.47:1; at least 4.5:1 "
        "is needed (choose a darker shade so links and headings stay readable)"]


# --------------------------------------------------------------------------- the settings table


def test_every_setting_is_a_field_of_the_model_value_it_fills() -> None:
    from newsletter.input.config import NETWORK, Group

    def check(group: Group) -> None:
        fields = {f.name for f in msgspec.structs.fields(group.model)}
        for setting in group.settings:
            assert setting.key in fields, f"{group.model.__name__}.{setting.key}"
            if isinstance(setting.read, Group):
                check(setting.read)

    check(NETWORK)


def test_setting_keys_are_exactly_the_keys_the_loader_accepts(tmp_path: Path) -> None:
    keys = setting_keys()
    assert len(keys) == len(set(keys))
    assert {"name", "helpline.emergency", "smtp.dkim_key", "limits.retry_deadline",
            "archive.quick_exit_url", "remote_images", "database"} <= set(keys)
    sections = [k for k in keys if any(other.startswith(k + ".") for other in keys)]
    assert sections == ["sender", "reply_to", "list_id", "helpline", "brand", "unsubscribe",
                        "smtp", "limits", "archive", "bounces", "inbox", "inbox.imap"]
    # an unknown key with no near miss makes the loader list the keys it allows, per section
    config = CONFIG + ("bounces:\n  address: bounces@wmasn.example.org\n"
                       "inbox:\n  imap:\n    host: imap.example.org\n    user: news\n")
    for section in ["", *sections]:
        indent = "  " * (section.count(".") + 1)
        last = section.rpartition(".")[2]
        text = config + "zzzzzzzz: 1\n" if not section else \
            re.sub(f"(?m)^{indent[2:]}{last}:.*$", f"\\g<0>\n{indent}zzzzzzzz: 1", config,
                   count=1)
        assert text != config
        (problem,) = [p for p in problems_of(write_config(tmp_path, text)) if "zzzz" in p]
        allowed = problem.split("allowed keys: ")[1].rstrip(")").split(", ")
        prefix = f"{section}." if section else ""
        assert [prefix + key for key in allowed] == [
            k for k in keys if k.startswith(prefix) and "." not in k.removeprefix(prefix)]
