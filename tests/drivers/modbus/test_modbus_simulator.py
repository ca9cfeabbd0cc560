"""The Modbus simulator's datastore (pymodbus SimDevice) seen by a plain pymodbus client."""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes

from drivers.modbus.points import Table
from simulators.modbus import ModbusSimulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def area():
    sim = ModbusSimulator("area_monitor", transport="tcp", unit_ids=(1, 2), seed=3)
    await sim.start()
    client = AsyncModbusTcpClient(sim.host, port=sim.port, timeout=2, retries=0)
    await client.connect()
    try:
        yield sim, client
    finally:
        client.close()
        await sim.stop()


def expected_words(sim: ModbusSimulator, unit: int, table: Table) -> dict[int, int]:
    values = sim.current_values(unit)
    words: dict[int, int] = {}
    for point in sim.points:
        if point.table is not table:
            continue
        value = values[point.channel]
        encoded = [int(bool(value))] if table.is_bits else point.encode(point.raw_for(float(value)))
        for i, word in enumerate(encoded):
            words[point.address + i] = word
    return words


async def test_every_table_serves_the_units_current_values(area):
    sim, client = area
    sim.set_stuck(True)  # freeze the story, so what is read can be compared
    for unit in (1, 2):
        inputs = await client.read_input_registers(0, count=6, device_id=unit)
        holding = await client.read_holding_registers(0, count=1, device_id=unit)
        coils = await client.read_coils(0, count=1, device_id=unit)
        discrete = await client.read_discrete_inputs(0, count=1, device_id=unit)
        assert not any(r.isError() for r in (inputs, holding, coils, discrete))
        want = expected_words(sim, unit, Table.INPUT)
        assert inputs.registers == [want.get(a, 0) for a in range(6)]
        assert holding.registers == [expected_words(sim, unit, Table.HOLDING)[0]]
        assert coils.bits[0] is bool(expected_words(sim, unit, Table.COIL)[0])
        assert discrete.bits[0] is True  # channel_ok
    assert sim.requests.total(1) == 4
    assert sim.requests.total(2) == 4


async def test_spare_space_reads_zero_and_beyond_it_is_an_illegal_address(area):
    sim, client = area
    last_mapped = max(p.end for p in sim.points if p.table is Table.INPUT)
    spare = await client.read_input_registers(last_mapped, count=32, device_id=1)
    assert spare.registers == [0] * 32
    beyond = await client.read_input_registers(last_mapped, count=33, device_id=1)
    assert beyond.isError()
    assert beyond.exception_code == ExcCodes.ILLEGAL_ADDRESS


async def test_an_unknown_unit_behind_a_tcp_server_is_a_gateway_error(area):
    _sim, client = area
    response = await client.read_input_registers(0, count=2, device_id=9)
    assert response.isError()
    assert response.exception_code == ExcCodes.GATEWAY_NO_RESPONSE


async def test_a_setpoint_write_is_kept_and_other_writes_are_refused(area):
    sim, client = area
    threshold = next(p for p in sim.points if p.channel == "alarm_threshold")
    written = await client.write_register(0, 1234, device_id=1)
    assert not written.isError()
    assert sim.current_values(1)["alarm_threshold"] == pytest.approx(threshold.value(1234))
    assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1234]
    assert sim.current_values(2)["alarm_threshold"] != pytest.approx(threshold.value(1234))

    coil = await client.write_coil(0, True, device_id=1)
    assert coil.isError()
    assert coil.exception_code == ExcCodes.ILLEGAL_ADDRESS


async def test_injected_exception_answers_every_read(area):
    sim, client = area
    sim.set_exception(6)
    busy = await client.read_input_registers(0, count=2, device_id=1)
    assert busy.isError()
    assert busy.exception_code == ExcCodes.DEVICE_BUSY
    sim.set_exception(None)
    assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
