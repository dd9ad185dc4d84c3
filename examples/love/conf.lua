-- LÖVE 11 configuration: a small window, no modules the example does not use.
function love.conf(t)
  t.identity = "instate-love-example" -- the save directory's name
  t.window.title = "instate: a LÖVE game that keeps its state"
  t.window.width, t.window.height = 480, 200
  t.modules.audio, t.modules.sound, t.modules.joystick = false, false, false
  t.modules.physics, t.modules.video, t.modules.touch = false, false, false
end
