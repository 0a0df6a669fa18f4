// Unit tests run in jsdom with ts-jest (no browser). JupyterLab packages are ES modules and are
// mocked in the tests that would reach them; the React components import React only.
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.spec.ts?(x)'],
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      {
        tsconfig: 'tsconfig.test.json'
      }
    ]
  }
};
