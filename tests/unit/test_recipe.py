"""Recipe validation: every mistake is one line naming the file, the key and what was expected."""

from __future__ import annotations

import pytest

from cernvm_build.errors import RecipeError
from cernvm_build.lock.recipe import PackageSpec, load_recipe

GOOD = '''
name = "demo"
flavour = "deb"
arch = "amd64"
packages = ["bash", "python3 (>= 3.11)", "libc6=2.36-9"]

[[repositories]]
name = "main"
url = "http://deb.debian.org/debian"
suite = "bookworm"
components = ["main"]
keyring = "keys/archive.gpg"
'''


def write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def test_good_recipe(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert [str(p) for p in r.packages] == ["bash", "python3 >= 3.11", "libc6 = 2.36-9"]
    assert r.repositories[0].keyring == str(tmp_path / "keys" / "archive.gpg")   # relative to the recipe
    assert r.digest().startswith("sha256:")


def test_digest_ignores_formatting_but_not_content(tmp_path):
    a = load_recipe(write(tmp_path, GOOD)).digest()
    b = load_recipe(write(tmp_path, "# comment\n" + GOOD.replace('"bash", ', '"bash",\n  '))).digest()
    c = load_recipe(write(tmp_path, GOOD.replace('"bash"', '"dash"'))).digest()
    assert a == b != c


@pytest.mark.parametrize("edit,message", [
    (lambda t: t + 'exlude = ["x"]\n', "unknown key 'exlude'"),
    (lambda t: t.replace('flavour = "deb"', 'flavour = "apk"'), "key 'flavour' must be one of deb, rpm"),
    (lambda t: t.replace('arch = "amd64"\n', ""), "missing required key 'arch'"),
    (lambda t: t.replace('packages = [', 'packages = [1, '), "packages[0] must be a non-empty string"),
    (lambda t: t.replace('"bash"', '"bash (>>> 1)"'), "packages[0]: 'bash (>>> 1)' is not a package name"),
    (lambda t: t.replace('suite = "bookworm"\n', ""), "repositories[0]: missing required key 'suite'"),
    (lambda t: t.replace('url = "http', 'url = "ftp'), "key 'url' must start with http://"),
    (lambda t: t.replace('components = ["main"]', 'components = "main"'), "key 'components' must be a list"),
    (lambda t: 'weak = "yes"\n' + t, "key 'weak' must be true or false"),
    (lambda t: 'priorities = ["vital"]\n' + t, "priorities: 'vital' is not one of"),
    (lambda t: t + '[boot]\nkernal = "x"\n', "boot: unknown key 'kernal'"),
    (lambda t: t + '[[repositories]]\nname = "main"\nurl = "http://x"\nsuite = "s"\n'
               'components = ["c"]\nkeyring = "k"\n', "repository name 'main' is used twice"),
    (lambda t: t.replace('keyring = "keys/archive.gpg"\n', ""), "missing required key 'keyring'"),
    (lambda t: t + "name2 = = 1\n", "not valid TOML"),
])
def test_bad_recipes_name_file_and_key(tmp_path, edit, message):
    p = write(tmp_path, edit(GOOD))
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    text = str(err.value)
    assert str(p) in text and message in text and "\n" not in text


def test_rpm_recipe_requires_key_unless_gpgcheck_off(tmp_path):
    rpm = '''name = "r"\nflavour = "rpm"\narch = "x86_64"\npackages = ["bash"]\n
[[repositories]]\nname = "base"\nurl = "file:///srv/repo"\n'''
    with pytest.raises(RecipeError, match="missing required key 'keyring'"):
        load_recipe(write(tmp_path, rpm))
    r = load_recipe(write(tmp_path, rpm + "gpgcheck = false\n"))
    assert r.repositories[0].gpgcheck is False
    with pytest.raises(RecipeError, match="apply to flavour 'deb' only"):
        load_recipe(write(tmp_path, rpm.replace('packages', 'essential = true\npackages') + "gpgcheck = false\n"))


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.toml")


def test_package_spec_operators():
    assert PackageSpec.parse("a (<< 2)", "x") == PackageSpec("a", "<", "2")
    assert PackageSpec.parse("a>=1:2.0-3", "x") == PackageSpec("a", ">=", "1:2.0-3")
