# SPDX-License-Identifier: Apache-2.0
"""Per-model NPU vision towers and their device graphs."""
