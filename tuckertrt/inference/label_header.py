"""Class names in a multilabel NIfTI header, as TotalSegmentator's ``--ml`` writes them.

TotalSegmentator stores the label table as the image's first header extension: Caret-style XML (extension code 0)
with one ``<Label Key="id" ...><![CDATA[name]]></Label>`` per class; its ``load_multilabel_nifti`` reads that
first extension. :func:`label_table_extension` makes the same extension; :func:`read_label_names` reads it back
(and the JSON table older tuckertrt outputs carry)."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

# TotalSegmentator's extension code and the colour cycle its label table uses (label id modulo 12).
TS_EXTENSION_CODE = 0
TS_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
              (255, 0, 128), (128, 255, 128), (0, 128, 255), (128, 128, 128), (185, 170, 155))


def label_table_xml(class_names: dict[int, str]) -> str:
    """The Caret label-table XML for ``{label id: name}`` (background excluded by the caller)."""
    rows = []
    for label, name in class_names.items():
        red, green, blue = (c / 255 for c in TS_COLOURS[label % len(TS_COLOURS)])
        cdata = name.replace("]]>", "]]]]><![CDATA[>")
        rows.append(f'<Label Key={quoteattr(str(label))} Red="{red}" Green="{green}" Blue="{blue}" Alpha="1">'
                    f"<![CDATA[{cdata}]]></Label>")
    return ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension>   <VolumeInformation Index="0">   <LabelTable>\n'
            + "\n".join(rows)
            + "\n  </LabelTable>  <VolumeType><![CDATA[Label]]></VolumeType>   </VolumeInformation></CaretExtension>\n")


def label_table_extension(class_names: dict[int, str]):
    """A nibabel header extension holding the label table, to be the image's first extension."""
    import nibabel as nib

    return nib.nifti1.Nifti1Extension(TS_EXTENSION_CODE, label_table_xml(class_names).encode("utf-8"))


def parse_label_table(content: bytes) -> dict[int, str] | None:
    """``{id: name}`` from a Caret label-table extension, or None if ``content`` is not one."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError:
        return None
    if root.tag != "CaretExtension":
        return None
    return {int(label.get("Key")): label.text or "" for label in root.iter("Label")}


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Class names of a multilabel NIfTI: TotalSegmentator's label table, else a JSON ``{id: name}`` extension;
    ``{}`` when the header carries neither."""
    import nibabel as nib

    extensions = nib.load(str(path)).header.extensions
    for ext in extensions:
        names = parse_label_table(ext.get_content())
        if names is not None:
            return names
    for ext in extensions:
        try:
            return {int(k): str(v) for k, v in json.loads(ext.get_content()).items()}
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            continue
    return {}
